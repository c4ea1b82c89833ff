// fmapviz explorer: sort and filter the channel tiles of a layer page, jump to a channel. No network, no libraries.
(function () {
  "use strict";
  var tiles = document.getElementById("tiles");
  if (!tiles) { return; }
  var sort = document.getElementById("sort");
  var hideDead = document.getElementById("hide-dead");
  var hideWeak = document.getElementById("hide-weak");
  var count = document.getElementById("shown");

  function number(tile, key) { return parseFloat(tile.dataset[key]); }

  function apply() {
    var key = sort.value;
    var items = Array.prototype.slice.call(tiles.children);
    items.sort(function (a, b) {
      if (key === "channel") { return number(a, "channel") - number(b, "channel"); }
      return (number(b, key) - number(a, key)) || (number(a, "channel") - number(b, "channel"));
    });
    var shown = 0;
    items.forEach(function (tile) {
      tiles.appendChild(tile);
      var state = tile.dataset.state;
      tile.hidden = (hideDead.checked && state === "dead") || (hideWeak.checked && state === "weak");
      if (!tile.hidden) { shown += 1; }
    });
    count.textContent = shown + " of " + items.length + " channels";
  }

  sort.addEventListener("change", apply);
  hideDead.addEventListener("change", apply);
  hideWeak.addEventListener("change", apply);
  document.getElementById("jump").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = document.getElementById("jump-to");
    var channel = parseInt(input.value, 10);
    if (isNaN(channel) || channel < 0 || channel >= tiles.children.length) {
      input.setCustomValidity("0 to " + (tiles.children.length - 1));
      input.reportValidity();
      return;
    }
    window.location.href = tiles.dataset.channelUrl.replace("CHANNEL", String(channel));
  });
  apply();
}());
