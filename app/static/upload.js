// Progressive enhancement of the submit page: the forms work without this file. With it, the upload shows its
// progress; the server's answer (the submissions page, or this page with the error beside the form) replaces
// the document as a plain form submission would.
"use strict";
document.querySelectorAll("form.upload").forEach((form) => {
  form.addEventListener("submit", (event) => {
    if (!window.XMLHttpRequest || !window.FormData) return;
    event.preventDefault();
    const bar = form.querySelector(".upload-progress");
    const button = form.querySelector("button[type=submit]");
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable && bar) { bar.hidden = false; bar.value = Math.round((100 * e.loaded) / e.total); }
    });
    request.addEventListener("load", () => {
      if (request.responseURL && request.responseURL !== form.action) { window.location.assign(request.responseURL); return; }
      const page = new DOMParser().parseFromString(request.responseText, "text/html");
      document.title = page.title;
      document.body.replaceWith(page.body);
    });
    request.addEventListener("error", () => { button.disabled = false; form.submit(); });
    button.disabled = true;
    request.send(new FormData(form));
  });
});
