// deskpilot web app: small progressive enhancements on top of server-rendered pages (everything works without JS).
(function () {
  "use strict";
  // An htmx request that fails shows the server's message in the flash area instead of doing nothing.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var status = evt.detail.xhr.status;
    if (status >= 400) {
      var flashes = document.querySelector(".flashes");
      if (flashes) {
        evt.detail.shouldSwap = true;
        evt.detail.isError = false;
        evt.detail.target = flashes;
        evt.detail.swapOverride = "innerHTML";
      }
    }
  });
  // Buttons with data-copy="#id" copy that element's text (or value) to the clipboard and say so.
  document.addEventListener("click", function (evt) {
    var btn = evt.target.closest("[data-copy]");
    if (!btn) { return; }
    var src = document.querySelector(btn.getAttribute("data-copy"));
    if (!src) { return; }
    var text = src.value !== undefined ? src.value : src.textContent;
    var done = function () {
      var note = btn.parentElement.querySelector(".copy-note");
      if (note) { note.textContent = "Copied."; }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else if (src.select) {
      src.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selected for Ctrl+C */ }
    }
  });
})();
