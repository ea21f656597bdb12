// The admin page: create a key (shown once) and revoke keys, through the JSON API.
"use strict";
const created = document.getElementById("created");
document.getElementById("new-key").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  try {
    const key = await api("POST", "/api/keys", { role: form.role.value, label: form.label.value });
    created.replaceChildren("New ", key.role, " key (copy it now, it is not shown again): ",
                            element("code", { class: "secret" }, key.key));
  } catch (error) {
    created.textContent = error.message;
  }
});
document.querySelectorAll("button.revoke").forEach((button) => {
  button.addEventListener("click", async () => {
    try {
      await api("DELETE", `/api/keys/${encodeURIComponent(button.dataset.key)}`);
      window.location.reload();
    } catch (error) {
      created.textContent = error.message;
    }
  });
});
