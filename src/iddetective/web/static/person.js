// The person page: erase the person everywhere (admins, after a confirmation); move, reject
// and merge faces (roles that may curate).
"use strict";
const eraseButton = document.getElementById("erase");
const eraseStatus = document.getElementById("erase-status");
if (eraseButton) {
  eraseButton.addEventListener("click", async () => {
    const name = eraseButton.dataset.name;
    if (!window.confirm(`Erase ${name} and every face of theirs for good? This cannot be undone.`)) return;
    try {
      const erased = await api("DELETE", `/api/people/${encodeURIComponent(eraseButton.dataset.person)}`);
      eraseStatus.textContent = `Erased ${erased.faces} faces (audit token ${erased.token}).`;
      eraseButton.disabled = true;
    } catch (error) {
      eraseStatus.textContent = error.message;
    }
  });
}

const moveForm = document.getElementById("move-faces");
const mergeForm = document.getElementById("merge-person");
const curateStatus = document.getElementById("curate-status");
showFlash();

function pickedFaces() {
  return [...document.querySelectorAll("input.pick-face:checked")].map((box) => Number(box.value));
}

async function recordEdit(url, body) {
  curateStatus.className = "";
  curateStatus.textContent = "Saving…";
  try {
    reloadSaying(editDone(await api("POST", url, body)));
  } catch (error) {
    curateStatus.className = "error";
    curateStatus.textContent = error.message;
  }
}

function withPickedFaces(action) {
  const faces = pickedFaces();
  if (faces.length === 0) {
    curateStatus.className = "error";
    curateStatus.textContent = "Tick the faces to move or reject first.";
    return;
  }
  action(faces);
}

if (moveForm) {
  moveForm.addEventListener("submit", (event) => {
    event.preventDefault();
    withPickedFaces((faces) => recordEdit("/api/faces/move", { face_ids: faces, ...personTarget(moveForm) }));
  });
  document.getElementById("reject-faces").addEventListener("click", () => {
    withPickedFaces((faces) => recordEdit("/api/faces/reject", { face_ids: faces }));
  });
}
if (mergeForm) {
  mergeForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const person = encodeURIComponent(mergeForm.dataset.person);
    recordEdit(`/api/people/${person}/merge`, { source: mergeForm.elements.source.value.trim() });
  });
}
