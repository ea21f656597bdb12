// Calls the JSON API with the page session: the cookie goes along, the CSRF token in a header.
"use strict";
function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}
async function api(method, url, body) {
  const options = { method, headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" };
  if (body instanceof FormData) options.body = body;
  else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return data;
}
function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}
// The curation pages reload to show what an edit changed, and say what it did once reloaded.
function reloadSaying(message) {
  sessionStorage.setItem("idd-flash", message);
  window.location.reload();
}
function showFlash() {
  const box = document.getElementById("flash");
  const message = sessionStorage.getItem("idd-flash");
  sessionStorage.removeItem("idd-flash");
  if (box && message) box.textContent = message;
}
function editDone(edit) {
  const undo = edit.kind === "undo" ? "" : " It can be undone on the Edits page.";
  return `Edit ${edit.id}: ${edit.summary}.${undo}`;
}
// Who faces go to, from a form's new_name and person fields: the server refuses both or neither.
function personTarget(form) {
  const target = {};
  for (const name of ["new_name", "person"]) {
    const value = form.elements[name].value.trim();
    if (value) target[name] = value;
  }
  return target;
}
