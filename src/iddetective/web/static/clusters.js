// The clusters page: name a cluster (a new person or an existing one), run the clustering.
"use strict";
showFlash();
document.querySelectorAll("form.name-cluster").forEach((form) => {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = form.querySelector(".status");
    status.className = "status";
    status.textContent = "Naming…";
    try {
      const edit = await api("POST", `/api/clusters/${form.dataset.cluster}/name`, personTarget(form));
      reloadSaying(editDone(edit));
    } catch (error) {
      status.className = "status error";
      status.textContent = error.message;
    }
  });
});
document.querySelectorAll("button.run-clustering").forEach((button) => {
  button.addEventListener("click", async () => {
    const flash = document.getElementById("flash");
    flash.className = "flash";
    flash.textContent = "Clustering…";
    try {
      const report = await api("POST", "/api/clusters/run", { full: button.dataset.full === "true" });
      reloadSaying(`Considered ${report.considered} unnamed faces; ${report.clusters} clusters ` +
                   `of two faces or more hold ${report.faces_in_clusters} faces.`);
    } catch (error) {
      flash.className = "flash error";
      flash.textContent = error.message;
    }
  });
});
