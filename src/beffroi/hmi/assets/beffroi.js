/* Beffroi HMI map: marker functions dash-leaflet calls by name, and the in-place state updater.
 *
 * A layer's GeoJSON data (positions, ids) is sent only when the filters change; every 2 s the
 * server sends a small "frame" (one state character per asset, positions of moving assets) and
 * applyFrame restyles or moves only the markers that changed, without rebuilding the layer.
 * Fixed assets are grouped into clusters when zoomed out: a cluster takes the colour of its
 * most urgent member, and is repainted from the frames like a single marker. An asset found by
 * discovery and not placed yet (feature property `p`) is drawn as a dashed ring, bigger, at its
 * commune's centre, whatever its state's colour.
 */
(function () {
  // Markers drawn now, per layer: single markers by feature index, cluster markers in a set.
  var layers = { fixed: { key: null, at: {} }, moving: { key: null, at: {} } };
  var clusters = [];
  var last = null; // the newest frame: a layer redrawn later takes its states from it

  // Words the markers show, in the user's language: the shell carries them (#shell-words).
  function word(key, fallback) {
    var el = document.getElementById("shell-words");
    return (el && el.dataset && el.dataset[key]) || fallback;
  }

  function classes(id, state, toPlace) {
    return (
      "beffroi-asset beffroi-state-" + state + " beffroi-id-" + id +
      (toPlace ? " beffroi-toplace" : "")
    );
  }

  function radius(state, toPlace) {
    return toPlace || state === "fault" || state === "p1" ? 7 : 5;
  }

  // The state codes of a layer: the newest frame's when it indexes the same features.
  function codesOf(h, layer) {
    var fresh = last && last.key === h.key && (last.t || 0) >= (h.t || 0);
    return { codes: (fresh ? last[layer] : h.states) || "", fresh: fresh };
  }

  function registry(h) {
    var layer = h.layer || "fixed";
    var reg = layers[layer];
    if (reg.key !== h.key) {
      layers[layer] = reg = { key: h.key, at: {} }; // another set of assets is being drawn
      if (layer === "fixed") clusters = [];
    }
    return reg;
  }

  function assetMarker(feature, latlng, context) {
    var h = (context && context.hideout) || {};
    var p = feature.properties;
    var layer = h.layer || "fixed";
    var known = codesOf(h, layer);
    var code = known.codes.charAt(p.i) || "s";
    if (known.fresh && layer === "moving" && last.pos && last.pos[p.i]) {
      latlng = L.latLng(last.pos[p.i]);
    }
    var state = (h.names || {})[code] || "stale";
    var toPlace = !!p.p;
    var marker = L.circleMarker(latlng, {
      radius: radius(state, toPlace),
      weight: toPlace ? 2 : 1,
      dashArray: toPlace ? "3 2" : null,
      color: "#1f2933",
      opacity: 0.8,
      fillColor: (h.colours || {})[code] || "#a8b0ba",
      fillOpacity: toPlace ? 0.6 : 0.95,
      className: classes(p.id, state, toPlace),
    });
    marker.bindTooltip(toPlace ? p.id + " (" + word("toPlace", "to be placed") + ")" : p.id, {
      direction: "top",
      offset: [0, -4],
    });
    marker.beffroiId = p.id;
    marker.beffroiToPlace = toPlace;
    marker.beffroiCode = code;
    marker.beffroiState = state;
    var reg = registry(h);
    reg.at[p.i] = marker;
    marker.on("remove", function () {
      if (reg.at[p.i] === marker) delete reg.at[p.i];
    });
    return marker;
  }

  // The most urgent code among a cluster's members (palette.rank lists codes most urgent first).
  function worst(members, codes, rank) {
    var best = rank.length;
    for (var k = 0; k < members.length; k++) {
      var r = rank.indexOf(codes.charAt(members[k]) || "s");
      if (r >= 0 && r < best) best = r;
    }
    return rank.charAt(best) || "s";
  }

  function clusterSummary(marker, codes, names) {
    var counts = {};
    for (var k = 0; k < marker.beffroiMembers.length; k++) {
      var c = codes.charAt(marker.beffroiMembers[k]) || "s";
      counts[c] = (counts[c] || 0) + 1;
    }
    var parts = [];
    for (var n = 0; n < marker.beffroiRank.length; n++) {
      var code = marker.beffroiRank.charAt(n);
      if (counts[code]) parts.push(counts[code] + " " + (names[code] || code));
    }
    var n = String(marker.beffroiMembers.length);
    return word("assets", "%(n)s assets:").replace("%(n)s", n) + " " + parts.join(", ");
  }

  function clusterIcon(count, state, colour) {
    var size = count < 10 ? 30 : count < 100 ? 36 : 44;
    return L.divIcon({
      html:
        '<div style="background:' + colour + '" data-count="' + count + '"><span>' + count +
        "</span></div>",
      className: "beffroi-cluster beffroi-state-" + state,
      iconSize: L.point(size, size),
    });
  }

  function clusterMarker(feature, latlng, index, context) {
    var h = (context && context.hideout) || {};
    var leaves = index.getLeaves(feature.properties.cluster_id, Infinity);
    var members = new Array(leaves.length);
    for (var k = 0; k < leaves.length; k++) members[k] = leaves[k].properties.i;
    var code = worst(members, codesOf(h, "fixed").codes, h.rank || "");
    var state = (h.names || {})[code] || "stale";
    var marker = L.marker(latlng, {
      icon: clusterIcon(members.length, state, (h.colours || {})[code] || "#a8b0ba"),
    });
    marker.beffroiMembers = members;
    marker.beffroiCode = code;
    marker.beffroiRank = h.rank || "";
    marker.bindTooltip(
      function () {
        return clusterSummary(marker, codesOf(h, "fixed").codes, h.labels || {});
      },
      { direction: "top" }
    );
    registry(h);
    clusters.push(marker);
    marker.on("remove", function () {
      var at = clusters.indexOf(marker);
      if (at >= 0) clusters.splice(at, 1);
    });
    return marker;
  }

  function paint(marker, code, frame) {
    if (!marker || marker.beffroiCode === code) return;
    var state = frame.names[code] || "stale";
    var el = marker.getElement && marker.getElement();
    if (el) {
      L.DomUtil.removeClass(el, "beffroi-state-" + marker.beffroiState);
      L.DomUtil.addClass(el, "beffroi-state-" + state);
    }
    marker.options.className = classes(marker.beffroiId, state, marker.beffroiToPlace);
    marker.setStyle({ fillColor: frame.colours[code] || "#a8b0ba" });
    marker.setRadius(radius(state, marker.beffroiToPlace));
    marker.beffroiCode = code;
    marker.beffroiState = state;
    if ((state === "fault" || state === "p1") && marker._map) marker.bringToFront();
  }

  function paintCluster(marker, codes, frame) {
    var code = worst(marker.beffroiMembers, codes, frame.rank || marker.beffroiRank);
    if (marker.beffroiCode === code) return;
    var state = frame.names[code] || "stale";
    marker.setIcon(clusterIcon(marker.beffroiMembers.length, state, frame.colours[code]));
    marker.beffroiCode = code;
  }

  function applyFrame(frame) {
    if (frame) {
      last = frame;
      // Markers of another set of assets (the layer is about to be redrawn) are left alone.
      var fixed = layers.fixed.key === frame.key ? frame.fixed || "" : "";
      if (fixed) {
        for (var i in layers.fixed.at) paint(layers.fixed.at[i], fixed.charAt(i), frame);
        for (var c = 0; c < clusters.length; c++) paintCluster(clusters[c], fixed, frame);
      }
      var moving = layers.moving.key === frame.key ? frame.moving || "" : "";
      var pos = frame.pos || [];
      for (var j in moving ? layers.moving.at : {}) {
        var m = layers.moving.at[j];
        paint(m, moving.charAt(j), frame);
        var ll = m.getLatLng();
        if (pos[j] && (ll.lat !== pos[j][0] || ll.lng !== pos[j][1])) m.setLatLng(pos[j]);
      }
    }
    return window.dash_clientside.no_update;
  }

  // The trend's zoom window, from the chart's relayout events, kept in the browser: resizes
  // and other relayouts change nothing, so they cost no round trip and cannot overtake a
  // pending redraw; a new range or new tags leave the zoom.
  function trendZoom(relayout) {
    var trigger = (window.dash_clientside.callback_context.triggered[0] || {}).prop_id || "";
    if (trigger.indexOf("trends-graph.") !== 0) return null;
    var r = relayout || {};
    if (r["xaxis.autorange"]) return null;
    var lo = r["xaxis.range[0]"], hi = r["xaxis.range[1]"];
    if (lo === undefined && Array.isArray(r["xaxis.range"])) {
      lo = r["xaxis.range"][0];
      hi = r["xaxis.range"][1];
    }
    if (lo === undefined || hi === undefined) return window.dash_clientside.no_update;
    return { lo: String(lo), hi: String(hi) };
  }

  window.dashExtensions = Object.assign({}, window.dashExtensions, {
    beffroi: { assetMarker: assetMarker, clusterMarker: clusterMarker },
  });
  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    beffroi: { applyFrame: applyFrame, trendZoom: trendZoom },
  });
})();
