/* The residents' car-park page: draws the map, filters the list, refreshes the counts.
   The list is already on the page (rendered by the server); this script only improves it. */
(function () {
  "use strict";
  var root = document.getElementById("parking");
  if (!root) { return; }
  var texts = JSON.parse(root.getAttribute("data-texts") || "{}");
  var locale = root.getAttribute("data-locale") || "fr";
  var liveUrl = root.getAttribute("data-live-url");
  var refreshS = parseFloat(root.getAttribute("data-refresh-s")) || 30;
  var list = document.getElementById("parking-list");
  var select = document.getElementById("parking-commune");
  var search = document.getElementById("parking-q");
  var countEl = document.getElementById("parking-count");
  var noneEl = document.getElementById("parking-none");
  var announceEl = document.getElementById("parking-announce");
  var generatedEl = document.getElementById("parking-generated");
  var errorEl = document.getElementById("parking-error");
  var mapEl = document.getElementById("parking-map");
  var STATUSES = ["available", "almost_full", "full", "closed", "unavailable"];
  var map = null;
  var markers = {};       // id -> Leaflet marker
  var data = {};          // id -> the latest row
  var timer = null;

  function fill(template, values) {
    return String(template || "").replace(/%\((\w+)\)s/g, function (all, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? String(values[key]) : all;
    });
  }

  function fold(text) {
    return String(text || "").normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
  }

  function plural(n) { return locale === "fr" ? n > 1 : n !== 1; }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  /* One list item, built like the server's (used for a car park added while the page is open). */
  function newItem(r) {
    var li = el("li", "park");
    li.id = "park-" + r.id;
    li.setAttribute("data-id", r.id);
    li.appendChild(el("h3", "park-name", r.name));
    li.appendChild(el("p", "park-commune", r.commune));
    var spaces = el("p", "park-spaces");
    var badge = el("span", "badge");
    badge.setAttribute("data-field", "status");
    var strong = el("strong");
    strong.setAttribute("data-field", "spaces");
    spaces.appendChild(badge);
    spaces.appendChild(document.createTextNode(" "));
    spaces.appendChild(strong);
    li.appendChild(spaces);
    var details = el("p", "park-details");
    var occ = el("span");
    occ.setAttribute("data-field", "occupancy");
    var trend = el("span", "trend");
    var arrow = el("span", "arrow");
    arrow.setAttribute("aria-hidden", "true");
    arrow.setAttribute("data-field", "arrow");
    var words = el("span");
    words.setAttribute("data-field", "trend");
    trend.appendChild(arrow);
    trend.appendChild(document.createTextNode(" "));
    trend.appendChild(words);
    details.appendChild(occ);
    details.appendChild(document.createTextNode(" "));
    details.appendChild(trend);
    li.appendChild(details);
    var updated = el("p", "park-updated");
    updated.setAttribute("data-field", "updated");
    li.appendChild(updated);
    var button = el("button", "show-on-map", texts.show);
    button.type = "button";
    button.setAttribute("data-id", r.id);
    var hidden = el("span", "visually-hidden", " – " + r.name);
    button.appendChild(hidden);
    button.hidden = !map;
    li.appendChild(button);
    return li;
  }

  function setText(li, field, text) {
    var node = li.querySelector('[data-field="' + field + '"]');
    if (node && node.textContent !== text) { node.textContent = text; }
  }

  function updateItem(li, r) {
    li.setAttribute("data-status", r.status);
    li.setAttribute("data-commune", r.commune);
    li.setAttribute("data-name", r.name);
    var badge = li.querySelector('[data-field="status"]');
    STATUSES.forEach(function (s) { badge.classList.remove("badge-" + s); });
    badge.classList.add("badge-" + r.status);
    setText(li, "status", r.text.status);
    setText(li, "spaces", r.text.spaces);
    setText(li, "occupancy", r.text.occupancy);
    setText(li, "arrow", r.text.arrow);
    setText(li, "trend", r.text.trend);
    setText(li, "updated", r.text.updated);
    li.querySelector(".trend").hidden = !r.trend;
  }

  function popupContent(r) {
    var box = el("div");
    box.appendChild(el("strong", "", r.name));
    box.appendChild(el("p", "", r.commune));
    box.appendChild(el("p", "", r.text.status + " — " + r.text.spaces));
    if (r.text.trend) { box.appendChild(el("p", "", r.text.arrow + " " + r.text.trend)); }
    if (r.text.updated) { box.appendChild(el("p", "", r.text.updated)); }
    return box;
  }

  function markerLabel(r) { return r.name + " — " + r.text.status + ", " + r.text.spaces; }

  function drawMarker(r) {
    var marker = markers[r.id];
    if (!marker) {
      var inner = el("span", "", r.text.marker);
      inner.setAttribute("aria-hidden", "true");
      marker = L.marker([r.lat, r.lon], {
        icon: L.divIcon({className: "parking-marker " + r.status, html: inner,
          iconSize: [44, 44], iconAnchor: [22, 22], popupAnchor: [0, -22]}),
        keyboard: true,
        riseOnHover: true
      });
      marker.bindPopup(popupContent(r));
      markers[r.id] = marker;
      marker.addTo(map);
    } else {
      marker.setLatLng([r.lat, r.lon]);
      marker.setPopupContent(popupContent(r));
    }
    var node = marker.getElement();
    if (node) {
      STATUSES.forEach(function (s) { node.classList.remove(s); });
      node.classList.add(r.status);
      node.setAttribute("aria-label", markerLabel(r));
      node.setAttribute("data-id", r.id);
      var span = node.querySelector("span");
      if (span && span.textContent !== r.text.marker) { span.textContent = r.text.marker; }
    }
  }

  function matches(li) {
    var commune = select ? select.value : "";
    var query = search ? fold(search.value.trim()) : "";
    if (commune && li.getAttribute("data-commune") !== commune) { return false; }
    if (query && fold(li.getAttribute("data-name") + " " +
        li.getAttribute("data-commune")).indexOf(query) < 0) { return false; }
    return true;
  }

  function applyFilter() {
    var shown = 0;
    Array.prototype.forEach.call(list.children, function (li) {
      var visible = matches(li);
      li.hidden = !visible;
      if (visible) { shown += 1; }
      var marker = markers[li.getAttribute("data-id")];
      if (marker && map) {
        if (visible && !map.hasLayer(marker)) {
          marker.addTo(map);
          drawMarker(data[li.getAttribute("data-id")]);  // a new element: label it again
        }
        if (!visible && map.hasLayer(marker)) { map.removeLayer(marker); }
      }
    });
    var n = shown.toLocaleString(locale === "fr" ? "fr-FR" : "en-GB");
    var text = fill(plural(shown) ? texts.shown : texts.shown_one, {n: n});
    if (countEl.textContent !== text) { countEl.textContent = text; }
    noneEl.hidden = shown > 0;
  }

  /* Put the car parks of a new answer in the list, in its order, and say what changed state. */
  function update(doc) {
    var changed = [];
    var ids = {};
    doc.car_parks.forEach(function (r, i) {
      ids[r.id] = true;
      var before = data[r.id];
      if (before && before.status !== r.status) { changed.push(r); }
      data[r.id] = r;
      var li = document.getElementById("park-" + r.id);
      if (!li) { li = newItem(r); }
      if (list.children[i] !== li) { list.insertBefore(li, list.children[i] || null); }
      updateItem(li, r);
      if (map) { drawMarker(r); }
    });
    Array.prototype.slice.call(list.children).forEach(function (li) {
      var id = li.getAttribute("data-id");
      if (!ids[id]) {
        list.removeChild(li);
        if (markers[id]) { map.removeLayer(markers[id]); delete markers[id]; }
        delete data[id];
      }
    });
    applyFilter();
    if (generatedEl.textContent !== doc.generated_text) { generatedEl.textContent = doc.generated_text; }
    // Said only when a car park changes state (becomes full, reopens...): not every count.
    if (changed.length) {
      var time = doc.generated_text;
      var said = changed.slice(0, 5).map(function (r) {
        return fill(texts.announce, {name: r.name, status: r.text.status});
      });
      announceEl.textContent = time + ". " + said.join(". ") + ".";
    }
  }

  function refresh() {
    if (timer) { clearTimeout(timer); timer = null; }
    fetch(liveUrl, {credentials: "omit"}).then(function (resp) {
      if (!resp.ok) { throw new Error(String(resp.status)); }
      return resp.json();
    }).then(function (doc) {
      errorEl.textContent = "";
      if (!map) {
        doc.car_parks.forEach(function (r) { data[r.id] = r; });
        drawMap();
      }
      update(doc);
    }).catch(function () {
      errorEl.textContent = fill(texts.failed, {s: Math.round(refreshS)});
    }).then(function () {
      if (!document.hidden) { timer = setTimeout(refresh, refreshS * 1000); }
    });
  }

  function showOnMap(id) {
    var marker = markers[id];
    if (!map || !marker) { return; }
    map.setView(marker.getLatLng(), Math.max(map.getZoom(), 16));
    marker.openPopup();
    mapEl.scrollIntoView({block: "nearest"});
    var node = marker.getElement();
    if (node) { node.focus({preventScroll: true}); }
  }

  function drawMap() {
    if (!mapEl || typeof L === "undefined") { return; }
    var settings = JSON.parse(mapEl.getAttribute("data-settings") || "{}");
    map = L.map(mapEl, {center: settings.center || [47.32, 5.04], zoom: settings.zoom || 12});
    var layers = {};
    (settings.tiles || []).forEach(function (t, i) {
      var layer = L.tileLayer(t.url, {attribution: t.attribution, minZoom: t.min_zoom,
        maxZoom: t.max_zoom, subdomains: t.subdomains || "abc"});
      layers[t.name] = layer;
      if (i === 0) { layer.addTo(map); }
    });
    if (Object.keys(layers).length > 1) { L.control.layers(layers).addTo(map); }
    if (settings.schematic) {
      fetch(settings.schematic).then(function (resp) {
        return resp.ok ? resp.json() : null;
      }).then(function (geo) {
        if (!geo) { return; }
        var drawn = L.geoJSON(geo, {interactive: false,
          style: {color: "#5b6b7c", weight: 1, fillColor: "#eef1f4", fillOpacity: 0.7}});
        drawn.addTo(map);
        drawn.bringToBack();
      }).catch(function () { /* the markers stand without a background */ });
    }
    if (settings.attribution && !(settings.tiles || []).length) {
      map.attributionControl.addAttribution(settings.attribution);
    }
    Object.keys(data).forEach(function (id) { drawMarker(data[id]); });
    var points = Object.keys(data).map(function (id) { return [data[id].lat, data[id].lon]; });
    if (points.length) { map.fitBounds(points, {padding: [30, 30], maxZoom: 15}); }
    Array.prototype.forEach.call(document.querySelectorAll(".show-on-map"), function (b) {
      b.hidden = false;
    });
    mapEl.setAttribute("data-ready", "true");
  }

  list.addEventListener("click", function (event) {
    var button = event.target.closest(".show-on-map");
    if (button) { showOnMap(button.getAttribute("data-id")); }
  });
  document.getElementById("parking-filter").addEventListener("submit", function (event) {
    event.preventDefault();  // filtered here, without a new page
    applyFilter();
  });
  if (select) { select.addEventListener("change", applyFilter); }
  if (search) { search.addEventListener("input", applyFilter); }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { refresh(); }
  });

  // The first answer brings every car park (the server may have filtered the list by ?commune=).
  refresh();
})();
