"""The page `geogan demo` serves: plain HTML and a little JavaScript, no build step and nothing fetched from outside."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>GeoGAN demo</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
  fieldset { display: inline-block; vertical-align: top; margin: 0 1rem 1rem 0; border: 1px solid #ccc; }
  img.face { width: 128px; height: 128px; object-fit: contain; background: #eee; display: block; margin-top: .4rem; }
  table { border-collapse: collapse; margin-top: 1rem; }
  td, th { padding: .3rem .6rem; text-align: center; font-weight: normal; }
  td img { width: 160px; height: 160px; image-rendering: pixelated; }
  #status { margin-top: 1rem; min-height: 1.2rem; }
  .error { color: #b00020; }
</style>
</head>
<body>
<h1>GeoGAN: put the reference's attribute on the source face</h1>
<fieldset><legend>source (without the attribute)</legend>
  <input type="file" id="source-file" accept="image/*">
  <select id="source-example"><option value="">or pick an example</option></select>
  <img class="face" id="source-preview" alt="">
</fieldset>
<fieldset><legend>reference (with the attribute)</legend>
  <input type="file" id="reference-file" accept="image/*">
  <select id="reference-example"><option value="">or pick an example</option></select>
  <img class="face" id="reference-preview" alt="">
</fieldset>
<fieldset><legend>models</legend>
  <label>A <select id="model-a"></select></label><br>
  <label>B <select id="model-b"><option value="">(none: one model only)</option></select></label><br>
  <button id="run" disabled>Transfer</button>
</fieldset>
<div id="status"></div>
<table id="results" hidden>
  <tr><th></th><th>source a (framed)</th><th>reference b (framed)</th><th>warped b'</th><th>mask m</th><th>result a*</th></tr>
</table>
<p><small>CelebA and CelebA-HQ faces are for non-commercial research use only; so is dlib's 68-point model, used to frame photos.</small></p>
<script>
const picked = {source: null, reference: null};
const $ = (id) => document.getElementById(id);
function status(text, isError) { $("status").textContent = text; $("status").className = isError ? "error" : ""; }
function ready() { $("run").disabled = !(picked.source && picked.reference); }
function show(role, dataUrl) { picked[role] = dataUrl; $(role + "-preview").src = dataUrl; ready(); }
function readFile(role) {
  const file = $(role + "-file").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => show(role, reader.result);
  reader.readAsDataURL(file);
}
async function readExample(role) {
  const name = $(role + "-example").value;
  if (!name) return;
  const blob = await (await fetch("/examples/" + encodeURIComponent(name))).blob();
  const reader = new FileReader();
  reader.onload = () => show(role, reader.result);
  reader.readAsDataURL(blob);
}
async function init() {
  const info = await (await fetch("/api/models")).json();
  for (const m of info.models) {
    $("model-a").add(new Option(m.label, m.uri));
    $("model-b").add(new Option(m.label, m.uri));
  }
  const first = info.models.find((m) => m.uri === info.default) || info.models[0];
  $("model-a").value = first ? first.uri : "";
  for (const role of ["source", "reference"]) {
    for (const name of info.examples) $(role + "-example").add(new Option(name, name));
    $(role + "-file").onchange = () => readFile(role);
    $(role + "-example").onchange = () => readExample(role);
  }
  status(info.models.length + " model(s) available");
}
async function run() {
  const models = [$("model-a").value, $("model-b").value].filter((m) => m);
  status("transferring with " + models.length + " model(s)...");
  $("run").disabled = true;
  try {
    const answer = await fetch("/api/transfer", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({source: picked.source, reference: picked.reference, models: models})});
    const body = await answer.json();
    if (!answer.ok) { status(body.error, true); return; }
    const table = $("results");
    while (table.rows.length > 1) table.deleteRow(1);
    body.results.forEach((r, i) => {
      const row = table.insertRow();
      row.id = "result-row-" + i;
      row.insertCell().textContent = $("model-a").options[[...$("model-a").options].findIndex((o) => o.value === r.uri)].text;
      for (const key of ["source", "reference", "warped", "mask", "output"]) {
        const img = document.createElement("img");
        img.src = r[key]; img.alt = key; img.className = "result-" + key; img.id = key + "-" + i;
        row.insertCell().appendChild(img);
      }
    });
    table.hidden = false;
    status("done");
  } catch (e) { status(String(e), true); } finally { ready(); }
}
$("run").onclick = run;
init();
</script>
</body>
</html>
"""
