// The edits page: undo an edit (the server refuses while a later edit changed the same faces).
"use strict";
showFlash();
document.querySelectorAll("button.undo").forEach((button) => {
  button.addEventListener("click", async () => {
    const flash = document.getElementById("flash");
    button.disabled = true;
    try {
      reloadSaying(editDone(await api("POST", `/api/edits/${button.dataset.edit}/undo`)));
    } catch (error) {
      flash.className = "flash error";
      flash.textContent = error.message;
      button.disabled = false;
    }
  });
});
