// iarnet dashboard: the little the server cannot do. Loaded with a strict
// Content-Security-Policy (no inline script); htmx does the rest.
(function () {
  "use strict";
  // The log viewer keeps at most this many characters, as Nomad's does.
  var LOG_CAP = 50000;

  function trimLog(box) {
    var total = box.textContent.length;
    while (total > LOG_CAP && box.firstChild) {
      total -= box.firstChild.textContent.length;
      box.removeChild(box.firstChild);
    }
  }

  function filterLog(box, query) {
    var q = query.toLowerCase();
    var lines = box.children;
    for (var i = 0; i < lines.length; i++) {
      var hit = q === "" || lines[i].textContent.toLowerCase().indexOf(q) >= 0;
      lines[i].classList.toggle("hidden", !hit);
    }
  }

  function follow(box) {
    var pane = box.parentElement;
    var follow = document.getElementById("log-follow");
    if (pane && (!follow || follow.checked)) {
      pane.scrollTop = pane.scrollHeight;
    }
  }

  document.addEventListener("htmx:afterSettle", function (e) {
    var box = document.getElementById("log-lines");
    if (!box) return;
    trimLog(box);
    var search = document.getElementById("log-search");
    if (search && search.value) filterLog(box, search.value);
    follow(box);
  });

  document.addEventListener("input", function (e) {
    if (e.target && e.target.id === "log-search") {
      var box = document.getElementById("log-lines");
      if (box) filterLog(box, e.target.value);
    }
  });

  // A search typed before scripts ran (the form works without them too).
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("log-lines");
    if (box) { trimLog(box); follow(box); }
  });
})();
