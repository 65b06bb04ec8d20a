/* Beffroi HMI map: marker functions dash-leaflet calls by name, and the in-place state updater.
 *
 * A layer's GeoJSON data (positions, ids) is sent only when the filters change; every 2 s the
 * server sends a small "frame" (one state character per asset, positions of moving assets) and
 * applyFrame restyles or moves only the markers that changed, without rebuilding the layer.
 */
(function () {
  var layers = { fixed: [], moving: [] }; // markers by feature index, per layer
  var last = null; // the newest frame: a layer redrawn later takes its states from it

  function classes(id, state) {
    return "beffroi-asset beffroi-state-" + state + " beffroi-id-" + id;
  }

  function radius(state) {
    return state === "fault" ? 7 : 5;
  }

  function assetMarker(feature, latlng, context) {
    var h = (context && context.hideout) || {};
    var p = feature.properties;
    var layer = h.layer || "fixed";
    // Same features (same indices) and newer than the hideout: the frame knows better.
    var fresh = last && last.key === h.key && (last.t || 0) >= (h.t || 0);
    var code = ((fresh ? last[layer] : h.states) || "").charAt(p.i) || "s";
    if (fresh && layer === "moving" && last.pos && last.pos[p.i]) latlng = L.latLng(last.pos[p.i]);
    var state = (h.names || {})[code] || "stale";
    var marker = L.circleMarker(latlng, {
      radius: radius(state),
      weight: 1,
      color: "#1f2933",
      opacity: 0.8,
      fillColor: (h.colours || {})[code] || "#a8b0ba",
      fillOpacity: 0.95,
      className: classes(p.id, state),
    });
    marker.bindTooltip(p.id, { direction: "top", offset: [0, -4] });
    marker.beffroiId = p.id;
    marker.beffroiCode = code;
    marker.beffroiState = state;
    var registry = layers[layer];
    if (p.i === 0) {
      registry.length = 0; // a new drawing of the layer starts
      registry.key = h.key;
    }
    registry[p.i] = marker;
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
    marker.options.className = classes(marker.beffroiId, state);
    marker.setStyle({ fillColor: frame.colours[code] || "#a8b0ba" });
    marker.setRadius(radius(state));
    marker.beffroiCode = code;
    marker.beffroiState = state;
    if (state === "fault" && marker._map) marker.bringToFront();
  }

  function applyFrame(frame) {
    if (frame) {
      last = frame;
      // Markers of another set of assets (the layer is about to be redrawn) are left alone.
      var fixed = layers.fixed.key === frame.key ? frame.fixed || "" : "";
      for (var i = 0; i < fixed.length; i++) paint(layers.fixed[i], fixed.charAt(i), frame);
      var moving = layers.moving.key === frame.key ? frame.moving || "" : "";
      var pos = frame.pos || [];
      for (var j = 0; j < moving.length; j++) {
        var m = layers.moving[j];
        if (!m) continue;
        paint(m, moving.charAt(j), frame);
        var ll = m.getLatLng();
        if (pos[j] && (ll.lat !== pos[j][0] || ll.lng !== pos[j][1])) m.setLatLng(pos[j]);
      }
    }
    return window.dash_clientside.no_update;
  }

  window.dashExtensions = Object.assign({}, window.dashExtensions, {
    beffroi: { assetMarker: assetMarker },
  });
  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    beffroi: { applyFrame: applyFrame },
  });
})();
