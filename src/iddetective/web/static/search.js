// The search page: upload the chosen photo, draw a button on every face, list its matches.
"use strict";
const form = document.getElementById("search-form");
const input = document.getElementById("photo");
const statusLine = document.getElementById("status");
const figure = document.getElementById("figure");
const stage = document.getElementById("stage");
const image = document.getElementById("query");
const caption = document.getElementById("caption");
const panel = document.getElementById("matches");

input.addEventListener("change", () => { if (input.files[0]) search(input.files[0]); });
form.addEventListener("dragover", (event) => { event.preventDefault(); form.classList.add("over"); });
form.addEventListener("dragleave", () => form.classList.remove("over"));
form.addEventListener("drop", (event) => {
  event.preventDefault();
  form.classList.remove("over");
  if (event.dataTransfer.files[0]) search(event.dataTransfer.files[0]);
});

async function search(file) {
  statusLine.textContent = `Searching ${file.name}…`;
  statusLine.className = "";
  panel.hidden = true;
  stage.querySelectorAll(".face").forEach((node) => node.remove());
  const body = new FormData();
  body.append("photo", file);
  let result;
  try {
    result = await api("POST", "/api/search", body);
  } catch (error) {
    statusLine.textContent = error.message;
    statusLine.className = "error";
    figure.hidden = true;
    return;
  }
  image.src = URL.createObjectURL(file);
  figure.hidden = false;
  show(result);
}

function show(result) {
  const faces = result.faces;
  const matched = faces.filter((face) => face.verdict === "match").length;
  statusLine.textContent = faces.length === 0
    ? "No face found in this photo."
    : `${faces.length} face${faces.length === 1 ? "" : "s"} found, ${matched} matched. Click a face to see who it is.`;
  caption.textContent = `Match threshold ${result.threshold} (distance; lower is closer).`;
  faces.forEach((face, number) => {
    const box = face.box;
    const button = element("button", {
      class: `face ${face.verdict}`,
      "aria-label": `Face ${number + 1}: ${label(face)}`,
    });
    // Set through the CSSOM: the pages' Content-Security-Policy refuses style attributes.
    Object.assign(button.style, {
      left: `${100 * box.left / result.query.width}%`,
      top: `${100 * box.top / result.query.height}%`,
      width: `${100 * (box.right - box.left) / result.query.width}%`,
      height: `${100 * (box.bottom - box.top) / result.query.height}%`,
    });
    button.addEventListener("click", () => select(button, face, number));
    stage.append(button);
  });
  const first = stage.querySelector(".face");
  if (faces.length === 1 && first) first.click();
}

function label(face) {
  const best = face.matches.find((match) => match.verdict === "match");
  if (!best) return "no match";
  return best.person ? best.person.name : "unnamed faces";
}

function select(button, face, number) {
  stage.querySelectorAll(".face").forEach((node) => node.classList.remove("selected"));
  button.classList.add("selected");
  panel.replaceChildren(element("h2", {}, `Face ${number + 1}`));
  if (face.verdict !== "match") {
    panel.append(element("p", { class: "nomatch" }, "No match: nobody in the catalogue is close enough."));
  }
  const list = element("ol", { class: "matches" });
  for (const match of face.matches) {
    const name = match.person
      ? element("a", { href: `/people/${encodeURIComponent(match.person.id)}`, class: "name" }, match.person.name)
      : element("span", { class: "name" }, "Unnamed faces");
    const verdict = element("span", { class: `verdict ${match.verdict}` },
                           match.verdict === "match" ? "match" : "no match");
    const crops = element("div", { class: "crops" });
    for (const hit of match.photos.slice(0, 6)) {
      crops.append(element("img", { src: `/api/faces/${hit.face_id}/crop`, width: "80", height: "80",
                                    alt: `Stored face, distance ${hit.distance}`, loading: "lazy" }));
    }
    list.append(element("li", {}, name, " ", verdict, " ",
                        element("span", { class: "distance" }, `distance ${match.distance}`), crops));
  }
  panel.append(list);
  panel.hidden = false;
}
