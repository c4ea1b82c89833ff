// fmapviz explorer: sort and filter the channel tiles of a layer page, jump to a channel, and the model page's
// search (from search.js). No network, no libraries.
(function () {
  "use strict";

  function layerPage(tiles) {
    // Every channel's tile data comes in one JSON script; the page holds only the first `page` tiles and
    // shows more as the reader scrolls, so a layer of 1,280 channels opens as fast as one of 240.
    var sort = document.getElementById("sort");
    var hideDead = document.getElementById("hide-dead");
    var hideWeak = document.getElementById("hide-weak");
    var count = document.getElementById("shown");
    var more = document.getElementById("more");
    var page = parseInt(tiles.dataset.page, 10) || 240;
    var limit = page;
    var nodes = {};
    Array.prototype.forEach.call(tiles.children, function (tile) { nodes[tile.dataset.channel] = tile; });
    var items = JSON.parse(document.getElementById("tile-data").textContent).map(function (row) {
      return {channel: row[0], state: row[1], mean: row[2], max: row[3], positive: row[4], src: row[5]};
    });
    var order = items;

    function tile(item) {
      // the tile Pages.tile writes, for a channel past the first page
      var link = document.createElement("a");
      link.className = "tile";
      link.href = tiles.dataset.channelUrl.replace("CHANNEL", String(item.channel));
      link.dataset.channel = item.channel;
      link.dataset.state = item.state;
      link.dataset.mean = item.mean;
      link.dataset.max = item.max;
      link.dataset.positive = item.positive;
      var picture = document.createElement(item.src ? "img" : "div");
      if (item.src) {
        picture.src = item.src;
        picture.alt = "channel " + item.channel;
        picture.loading = "lazy";
        picture.width = 96;
        picture.height = 96;
      } else { picture.className = "small"; }
      var label = document.createElement("span");
      label.textContent = item.channel;
      var peak = document.createElement("small");
      peak.textContent = "max " + parseFloat(item.max.toPrecision(3));
      link.append(picture, label, peak);
      return link;
    }

    function render() {
      var fragment = document.createDocumentFragment();
      order.slice(0, limit).forEach(function (item) {
        var node = nodes[item.channel] || (nodes[item.channel] = tile(item));
        fragment.appendChild(node);
      });
      tiles.replaceChildren(fragment);
      more.hidden = order.length <= limit;
      more.textContent = "show " + Math.min(page, order.length - limit) + " more";
      count.textContent = order.length + " of " + items.length + " channels" +
        (order.length > limit ? " (" + limit + " on the page, more as you scroll)" : "");
    }

    function apply() {
      var key = sort.value;
      order = items.filter(function (item) {
        return !((hideDead.checked && item.state === "dead") || (hideWeak.checked && item.state === "weak"));
      });
      order.sort(function (a, b) {
        if (key === "channel") { return a.channel - b.channel; }
        return (b[key] - a[key]) || (a.channel - b.channel);
      });
      limit = page;
      render();
    }

    sort.addEventListener("change", apply);
    hideDead.addEventListener("change", apply);
    hideWeak.addEventListener("change", apply);
    more.addEventListener("click", function () { limit += page; render(); });
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(function (entries) {
        if (entries[0].isIntersecting && !more.hidden) { limit += page; render(); }
      }, {rootMargin: "400px"}).observe(more);
    }
    document.getElementById("jump").addEventListener("submit", function (event) {
      event.preventDefault();
      var input = document.getElementById("jump-to");
      var channel = parseInt(input.value, 10);
      if (isNaN(channel) || channel < 0 || channel >= items.length) {
        input.setCustomValidity("0 to " + (items.length - 1));
        input.reportValidity();
        return;
      }
      window.location.href = tiles.dataset.channelUrl.replace("CHANNEL", String(channel));
    });
    if (sort.value !== "channel" || hideDead.checked || hideWeak.checked) { apply(); } else { render(); }
  }

  // ---------------------------------------------------------------------------------------- model page search

  function find(index, query) {
    // [{text, href}] for a query: "LAYER N", "LAYER[N]", a layer, or a class or photo name (part of it)
    var q = query.trim();
    var results = [];
    if (!q) { return results; }
    var m = /^(.+?)\s*(?:\[\s*(\d+)\s*\]|\s+#?(\d+))$/.exec(q);
    if (m && index.layers[m[1]]) {
      var layer = index.layers[m[1]];
      var channel = parseInt(m[2] || m[3], 10);
      if (channel < layer.channels) {
        return [{text: m[1] + "[" + channel + "]", href: layer.folder + channel + ".html"}];
      }
      return [{text: m[1] + " has " + layer.channels + " channels (0 to " + (layer.channels - 1) + ")", href: null}];
    }
    var lower = q.toLowerCase();
    Object.keys(index.layers).forEach(function (name) {
      if (name.toLowerCase().indexOf(lower) === 0) {
        results.push({text: name + " (" + index.layers[name].channels + " channels)", href: index.layers[name].page});
      }
    });
    index.drivers.forEach(function (driver) {
      if (driver.name.toLowerCase().indexOf(lower) < 0) { return; }
      results.push({text: driver.name + " (" + driver.kind + ") drives:", href: driver.page || null,
                    channels: driver.channels.slice(0, 24).map(function (pair) {
                      return {text: pair[0] + "[" + pair[1] + "]", href: index.layers[pair[0]].folder + pair[1] + ".html"};
                    })});
    });
    return results;
  }

  function link(item) {
    var node = document.createElement(item.href ? "a" : "span");
    if (item.href) { node.href = item.href; }
    node.textContent = item.text;
    return node;
  }

  function searchBox(form, index) {
    var input = document.getElementById("search-query");
    var list = document.getElementById("search-results");
    function show() {
      var found = find(index, input.value);
      list.textContent = "";
      found.slice(0, 50).forEach(function (item) {
        var row = document.createElement("li");
        row.appendChild(link(item));
        (item.channels || []).forEach(function (channel) {
          row.appendChild(document.createTextNode(" "));
          row.appendChild(link(channel));
        });
        list.appendChild(row);
      });
      if (input.value.trim() && !found.length) { list.appendChild(link({text: "no layer, channel, class or photo matches"})); }
      return found;
    }
    input.addEventListener("input", show);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var found = show();
      if (found.length === 1 && found[0].href && !found[0].channels) { window.location.href = found[0].href; }
    });
  }

  var tiles = document.getElementById("tiles");
  if (tiles) { layerPage(tiles); }
  var form = document.getElementById("search");
  if (form && window.FMAPVIZ_SEARCH) { searchBox(form, window.FMAPVIZ_SEARCH); }
}());
