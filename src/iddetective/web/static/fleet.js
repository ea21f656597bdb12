// The fleet page: polls /api/fleet every 2 s (the next poll once the last answered) and
// sends pause, resume, resize and stop to every worker.
"use strict";
const POLL_MS = 2000;
const flash = document.getElementById("flash");
const processesInput = document.getElementById("processes");
let processesShown = false; // filled in once from the workers, then left to the user

function bytes(count) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = count, unit = 0;
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1; }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}
function rate(value) {
  return value === null ? "–" : value.toFixed(2);
}
function ago(unixSeconds) {
  if (unixSeconds === null) return "never";
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
  return seconds < 2 ? "now" : `${seconds} s ago`;
}
function state(worker) {
  if (!worker.alive) return "silent";
  return worker.paused ? "paused" : "taking batches";
}
function workerRow(worker) {
  const cells = [worker.name, worker.host, worker.pid ?? "", worker.pool, worker.concurrency,
                 state(worker), worker.busy, worker.photos_done, rate(worker.photos_per_second),
                 worker.photos_failed];
  const row = element("tr", { "data-worker": worker.name, class: state(worker).replace(" ", "-") });
  for (const cell of cells) row.append(element("td", {}, String(cell)));
  // A silent worker's last sign of life may be older than this server: its last batch.
  const lastBatch = `last batch stored: ${ago(worker.last_batch_at)}`;
  row.append(element("td", { title: lastBatch }, ago(worker.last_seen)));
  return row;
}
function show(fleet) {
  const totals = {
    alive: `${fleet.alive} of ${fleet.workers.length}`, processes: fleet.concurrency,
    busy: fleet.busy, queue: fleet.queue_depth, done: fleet.photos_done,
    rate: rate(fleet.photos_per_second), failures: fleet.photos_failed,
    people: fleet.catalogue.people, photos: fleet.catalogue.photos,
    faces: fleet.catalogue.faces, failed: fleet.catalogue.failed,
    bytes: bytes(fleet.catalogue.data_bytes),
  };
  for (const [name, value] of Object.entries(totals)) {
    document.getElementById(`total-${name}`).textContent = String(value);
  }
  document.querySelector("#workers tbody").replaceChildren(...fleet.workers.map(workerRow));
  document.getElementById("no-workers").hidden = fleet.workers.length > 0;
  const alive = fleet.workers.filter((worker) => worker.alive);
  if (!processesShown && alive.length) {
    processesInput.value = String(Math.max(...alive.map((worker) => worker.concurrency)));
    processesShown = true;
  }
}
async function refresh() {
  const status = document.getElementById("refreshed");
  try {
    show(await api("GET", "/api/fleet"));
    status.className = "hint";
    status.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (error) {
    status.className = "hint error";
    status.textContent = `Cannot read the workers' state: ${error.message}`;
  }
  setTimeout(refresh, POLL_MS);
}
async function act(path, body, button) {
  button.disabled = true;
  try {
    const answer = await api("POST", `/api/fleet/${path}`, body);
    flash.className = "flash";
    flash.textContent = answer.replies.length
      ? answer.replies.map((reply) => `${reply.name}: ${reply.message}`).join("; ")
      : "No worker answered.";
    if (answer.replies.some((reply) => !reply.ok)) flash.className = "flash error";
  } catch (error) {
    flash.className = "flash error";
    flash.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}
for (const name of ["pause", "resume"]) {
  const button = document.getElementById(name);
  button.addEventListener("click", () => act(name, {}, button));
}
document.getElementById("stop").addEventListener("click", (event) => {
  if (window.confirm("Stop every worker once its running batches are done?")) {
    act("stop", {}, event.currentTarget);
  }
});
document.getElementById("fleet-controls").addEventListener("submit", (event) => {
  event.preventDefault();
  processesShown = true;
  const processes = Number(processesInput.value);
  act("resize", { processes }, document.getElementById("resize"));
});
// -- hosts of the hosts file: start and end worker processes over SSH -------------------
const hostFlash = document.getElementById("host-flash");
function hostRow(host) {
  const row = element("tr", { "data-host": host.name });
  const where = `${host.user ? `${host.user}@` : ""}${host.address}:${host.port}`;
  const count = element("input", { type: "number", min: "1", max: "256", value: "1",
                                   "aria-label": `Workers to start on ${host.name}` });
  const start = element("button", { type: "button" }, "Start");
  const end = element("button", { type: "button" }, "End");
  start.addEventListener("click", () => hostAction(host.name, "up", { workers: Number(count.value) }, start));
  end.addEventListener("click", () => {
    if (window.confirm(`End the workers started on ${host.name}?`)) hostAction(host.name, "down", {}, end);
  });
  row.append(element("td", {}, host.name), element("td", {}, where),
             element("td", {}, count), element("td", {}, start, end));
  return row;
}
async function hostAction(name, action, body, button) {
  button.disabled = true;
  try {
    const answer = await api("POST", `/api/fleet/hosts/${encodeURIComponent(name)}/${action}`, body);
    const verb = action === "up" ? "started" : "ended";
    hostFlash.className = "flash";
    hostFlash.textContent = answer.pids.length
      ? `${name}: ${verb} worker processes ${answer.pids.join(", ")}`
      : `${name}: no worker process was running there`;
  } catch (error) {
    hostFlash.className = "flash error";
    hostFlash.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}
async function loadHosts() {
  try {
    const answer = await api("GET", "/api/fleet/hosts");
    document.querySelector("#hosts tbody").replaceChildren(...answer.hosts.map(hostRow));
    if (!answer.exists) {
      hostFlash.className = "flash";
      hostFlash.textContent = `No hosts file at ${answer.hosts_file}: write one to start workers ` +
        "on other machines from here (docs/scaling.md, \"Remote hosts\").";
    }
  } catch (error) {
    hostFlash.className = "flash error";
    hostFlash.textContent = error.message;
  }
}
refresh();
loadHosts();
