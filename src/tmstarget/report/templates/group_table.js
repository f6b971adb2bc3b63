(function () {
  "use strict";
  // The dataset table: sort by a column (click or Enter on its heading), filter by text and by verdict.
  // Runs offline (inline, allowed by its hash in the page's Content-Security-Policy); without JavaScript
  // the table stays a plain table, worst first, and these controls stay hidden.
  var table = document.getElementById("units"), tools = document.getElementById("unit-tools");
  if (!table || !tools || !table.tBodies.length) return;
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  var search = document.getElementById("unit-search"), shown = document.getElementById("unit-shown");
  var boxes = Array.prototype.slice.call(tools.querySelectorAll("input[data-status]"));
  var rank = {fail: 0, warn: 1, pass: 2}, sorted = {col: -1, dir: 1};
  var texts = rows.map(function (r) { return r.textContent.toLowerCase(); });
  rows.forEach(function (r, i) { r.dataset.order = i; });
  tools.hidden = false;

  function key(row, col) {
    // a number where the cell holds one (a coordinate sorts by x), the verdict by severity, else the text;
    // null for a missing value, which sorts last in both directions
    var t = row.cells[col].textContent.trim();
    if (t === "n/a" || t === "-" || t === "") return null;
    if (t === "same voxel") return 0;
    if (rank.hasOwnProperty(t)) return rank[t];
    var v = parseFloat(t.replace(/^\(/, ""));
    return isNaN(v) ? t.toLowerCase() : v;
  }

  function sortBy(col) {
    sorted.dir = sorted.col === col ? -sorted.dir : 1;
    sorted.col = col;
    var keyed = rows.map(function (r) { return [key(r, col), +r.dataset.order, r]; });
    keyed.sort(function (a, b) {
      if (a[0] === null || b[0] === null) return (a[0] === null) - (b[0] === null) || a[1] - b[1];
      if (typeof a[0] !== typeof b[0]) return (typeof a[0] === "string") - (typeof b[0] === "string");
      return (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0) * sorted.dir || a[1] - b[1];
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k[2]); });
    body.appendChild(frag);
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.setAttribute("aria-sort", i === col ? (sorted.dir > 0 ? "ascending" : "descending") : "none");
    });
  }

  function filter() {
    var q = search.value.trim().toLowerCase(), allowed = {}, n = 0;
    boxes.forEach(function (b) { allowed[b.dataset.status] = b.checked; });
    rows.forEach(function (r, i) {
      var show = allowed[r.dataset.status] !== false && (!q || texts[i].indexOf(q) >= 0);
      r.hidden = !show;
      n += show ? 1 : 0;
    });
    shown.textContent = "showing " + n + " of " + rows.length + " units";
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.tabIndex = 0;
    th.classList.add("sortable");
    th.title = "sort by this column (again: reverse)";
    th.addEventListener("click", function () { sortBy(i); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(i); } });
  });
  search.addEventListener("input", filter);
  boxes.forEach(function (b) { b.addEventListener("change", filter); });
  filter();
})();
