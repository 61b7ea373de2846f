package admin

import (
	"html/template"
	"net/http"
)

// statusPage is self-contained (no external CSS or scripts) so that it works
// on hosts without internet access.
var statusPage = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>balancer {{.Node}}</title>
<meta http-equiv="refresh" content="2">
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}.open{color:#b00;font-weight:bold}.half-open{color:#b60}.closed{color:#080}
.num{text-align:right;font-variant-numeric:tabular-nums}
</style></head><body>
<h1>balancer node {{.Node}}</h1>
<p>Readiness: {{if .Ready}}<b class="closed">ready</b>{{else}}<b class="open">not ready: {{.NotReady}}</b>{{end}}
 &middot; config index {{.Config.Index}}</p>
<table><tr><th>backend</th><th>address</th><th>weight</th><th>in flight (here)</th><th>in flight (cluster)</th><th>requests</th><th>failures</th><th>breaker</th></tr>
{{range .Rows}}<tr><td>{{.ID}}</td><td>{{.Address}}</td><td class="num">{{.Weight}}{{if .Pinned}} (pinned){{end}}{{if .Drain}} (draining){{end}}</td>
<td class="num">{{.Load.Local}}</td><td class="num">{{.Load.Cluster}}</td><td class="num">{{.Load.Requests}}</td><td class="num">{{.Load.Failures}}</td>
<td>{{range $n, $s := .Load.Breaker}}<span class="{{$s}}">{{$n}}: {{$s}}</span> {{end}}</td></tr>
{{end}}</table>
<p>JSON: <a href="/v1/load">/v1/load</a> &middot; <a href="/v1/config">/v1/config</a> &middot; <a href="/metrics">/metrics</a></p>
</body></html>
`))

type statusRow struct {
	Backend
	Load BackendLoad
}

func renderStatus(w http.ResponseWriter, s Sources) {
	cfg := s.Config.Config()
	load := s.Load.Load()
	byID := make(map[string]BackendLoad, len(load.Backends))
	for _, b := range load.Backends {
		byID[b.ID] = b
	}
	rows := make([]statusRow, 0, len(cfg.Backends))
	for _, b := range cfg.Backends {
		rows = append(rows, statusRow{Backend: b, Load: byID[b.ID]})
	}
	data := struct {
		Node     string
		Ready    bool
		NotReady string
		Config   Config
		Rows     []statusRow
	}{Node: s.Node, Config: cfg, Rows: rows}
	if err := s.Ready(); err != nil {
		data.NotReady = err.Error()
	} else {
		data.Ready = true
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = statusPage.Execute(w, data)
}
