// The query page: run a query through the API; draw a caret under the place an error names.
"use strict";
const queryForm = document.getElementById("query-form");
const errorBox = document.getElementById("query-error");
const queryStatus = document.getElementById("query-status");
const peopleList = document.getElementById("query-people");
const matchList = document.getElementById("query-matches");

queryForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  errorBox.hidden = true;
  peopleList.replaceChildren();
  matchList.replaceChildren();
  const body = new FormData();
  body.append("q", queryForm.q.value);
  if (queryForm.photo.files[0]) body.append("photo", queryForm.photo.files[0]);
  queryStatus.textContent = "Running…";
  const response = await fetch("/api/query", {
    method: "POST", body, credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken() },
  });
  const data = await response.json().catch(() => null);
  queryStatus.textContent = "";
  if (!response.ok) {
    showError(data && data.error ? data.error : { message: `HTTP ${response.status}` });
    return;
  }
  showPeople(data.people);
  if (data.search) showMatches(data.search);
});

function showError(error) {
  const lines = [error.message.split("\n")[0]];
  if (error.line) {
    // The query line in question, and a caret under the column the server named.
    const source = queryForm.q.value.split("\n")[error.line - 1] || "";
    lines.push(source, " ".repeat(Math.max(error.column - 1, 0)) + "^");
  }
  errorBox.textContent = lines.join("\n");
  errorBox.hidden = false;
}

function showPeople(people) {
  queryStatus.textContent = `${people.length} ${people.length === 1 ? "person" : "people"} selected.`;
  for (const person of people.slice(0, 500)) {
    peopleList.append(element("li", {}, element("a", { href: `/people/${encodeURIComponent(person.id)}` }, person.name)));
  }
}

function showMatches(search) {
  if (search.faces.length === 0) {
    queryStatus.textContent += " No face found in the photo.";
    return;
  }
  search.faces.forEach((face, number) => {
    const best = face.matches.find((match) => match.verdict === "match");
    const who = best ? (best.person ? best.person.name : "unnamed faces") : "no match";
    matchList.append(element("li", {}, `Face ${number + 1}: ${who}`));
  });
}
