// Sortable tables: each header of a `table.sortable` holds a button (keyboard reachable); activating it sorts
// the rows by the cells' data-sort values and updates aria-sort. Empty values always sort last.
(function () {
  "use strict";
  function key(row, index) {
    var cell = row.children[index];
    return cell ? cell.getAttribute("data-sort") || "" : "";
  }
  function compare(type, a, b) {
    if (a === "" || b === "") { return (a === "") - (b === ""); }
    if (type === "number") { return parseFloat(a) - parseFloat(b); }
    return a.localeCompare(b);
  }
  function sortBy(table, th) {
    var headers = Array.prototype.slice.call(th.parentNode.children);
    var index = headers.indexOf(th);
    var type = th.getAttribute("data-type") || "text";
    var direction = th.getAttribute("aria-sort") === "descending" ? "ascending"
      : th.getAttribute("aria-sort") === "ascending" ? "descending"
      : (type === "number" && index > 0 ? "descending" : "ascending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = key(r1, index), b = key(r2, index);
      if (a === "" || b === "") { return compare(type, a, b); }
      var c = compare(type, a, b);
      return direction === "ascending" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", direction);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th) {
      var button = th.querySelector("button");
      if (button) { button.addEventListener("click", function () { sortBy(table, th); }); }
    });
  });
})();
