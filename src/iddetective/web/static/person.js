// The person page (admins): erase the person everywhere, after a confirmation.
"use strict";
const eraseButton = document.getElementById("erase");
const eraseStatus = document.getElementById("erase-status");
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
