package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// writeOutputs prints the table and writes results.json and report.html.
func writeOutputs(cfg Config, res *Results) error {
	WriteTable(cfg.Stdout, res)
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "results.json"), b, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "report.html"), []byte(HTML(res)), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Progress, "bench: wrote %s and %s\n", filepath.Join(cfg.Out, "results.json"), filepath.Join(cfg.Out, "report.html"))
	return nil
}

// describe is the one-paragraph setup of a benchmark.
func describe(res *Results) string {
	var b strings.Builder
	fmt.Fprintf(&b, "profile %s, ", res.Profile)
	if len(res.Targets) > 0 {
		fmt.Fprintf(&b, "existing cluster %s, ", strings.Join(res.Targets, ","))
	} else {
		fmt.Fprintf(&b, "%d nodes, %d backends (", res.Nodes, len(res.Backends))
		for i, s := range res.Backends {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %gms/%dw/w%d", s.ID, s.DelayMS, s.Workers, s.Weight)
		}
		b.WriteString("), ")
	}
	if res.Mode == "open" {
		fmt.Fprintf(&b, "open loop %.0f req/s", res.Rate)
	} else {
		fmt.Fprintf(&b, "closed loop %d clients", res.Concurrency)
	}
	fmt.Fprintf(&b, ", %gs per run after %gs warmup; %s/%s, %d CPUs, %s, load avg %.1f -> %.1f", res.DurationS, res.WarmupS,
		res.Machine.OS, res.Machine.Arch, res.Machine.CPUs, res.Machine.GoVersion, res.Machine.LoadAvgStart, res.Machine.LoadAvgEnd)
	return b.String()
}

func backendIDs(res *Results) []string {
	var ids []string
	for _, s := range res.Backends {
		ids = append(ids, s.ID)
	}
	if len(ids) == 0 {
		seen := map[string]bool{}
		for _, r := range res.Runs {
			for _, k := range sortedKeys(r.BackendRequests) {
				if !seen[k] {
					seen[k] = true
					ids = append(ids, k)
				}
			}
		}
	}
	return ids
}

// row is one table row's cells.
func row(r Row, ids []string) []string {
	if r.Error != "" {
		return []string{r.Name, "failed: " + r.Error}
	}
	bal, stale := "-", "-"
	if r.Balance != nil {
		bal = fmt.Sprintf("%.2f", r.Balance.MeanRatio)
	}
	if r.Staleness != nil {
		stale = fmt.Sprintf("%.0f/%.0f", r.Staleness.Mean, r.Staleness.Max)
	}
	var share []string
	for _, id := range ids {
		share = append(share, fmt.Sprintf("%.0f", 100*r.Share[id]))
	}
	vs := "-"
	if r.RPSvsDirect > 0 {
		vs = fmt.Sprintf("%.2f/%.2f", r.RPSvsDirect, r.P50vsDirect)
	}
	return []string{r.Name, fmt.Sprintf("%.0f", r.RPS), fmt.Sprint(r.Errors),
		f1(r.Latency.P50), f1(r.Latency.P90), f1(r.Latency.P99), f1(r.Latency.P999), f1(r.Latency.Max),
		bal, stale, strings.Join(share, "/"), vs}
}

func header(ids []string) []string {
	return []string{"RUN", "REQ/S", "ERRORS", "P50ms", "P90ms", "P99ms", "P99.9ms", "MAXms", "MAX/MEAN", "STALEms avg/max", "SHARE% " + strings.Join(ids, "/"), "vs DIRECT rps/p50"}
}

func f1(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// WriteTable prints the results as an aligned table.
func WriteTable(w io.Writer, res *Results) {
	fmt.Fprintln(w, describe(res))
	ids := backendIDs(res)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header(ids), "\t")+"\t")
	for _, r := range res.Runs {
		fmt.Fprintln(tw, strings.Join(row(r, ids), "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w, "MAX/MEAN: busiest backend's in-flight+queued over the mean, sampled every 50ms (1 = even). STALE: oldest gossip peer report age.")
	if o := res.Overhead; o != nil {
		fmt.Fprintf(w, "proxy overhead (%s, best algorithm %s): throughput %.2fx direct, p50 %.2fx direct\n", res.Profile, o.Algorithm, o.RPSRatio, o.P50Ratio)
	}
	for _, n := range res.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"}

type chartSeries struct {
	name  string
	color string
	pts   [][2]float64
}

// axis maps data values to pixels, linear or log10.
type axis struct {
	lo, hi float64
	log    bool
	p0, p1 float64 // pixel range
}

func (a axis) pos(v float64) float64 {
	lo, hi := a.lo, a.hi
	if a.log {
		v, lo, hi = math.Log10(math.Max(v, 1e-9)), math.Log10(lo), math.Log10(hi)
	}
	if hi == lo {
		return a.p0
	}
	return a.p0 + (v-lo)/(hi-lo)*(a.p1-a.p0)
}

// ticks returns tick values for the axis.
func (a axis) ticks() []float64 {
	var out []float64
	if a.log {
		for e := math.Floor(math.Log10(a.lo)); e <= math.Ceil(math.Log10(a.hi)); e++ {
			for _, m := range []float64{1, 2, 5} {
				v := m * math.Pow(10, e)
				if v >= a.lo*0.999 && v <= a.hi*1.001 {
					out = append(out, v)
				}
			}
		}
		return out
	}
	span := a.hi - a.lo
	if span <= 0 {
		return []float64{a.lo}
	}
	step := math.Pow(10, math.Floor(math.Log10(span/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if span/(step*m) <= 6 {
			step *= m
			break
		}
	}
	for v := math.Ceil(a.lo/step) * step; v <= a.hi+step/1000; v += step {
		out = append(out, v)
	}
	return out
}

func tickLabel(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

// svgChart draws series as lines in an inline SVG.
func svgChart(b *strings.Builder, title, xlabel, ylabel string, series []chartSeries, xa, ya axis, xlabelFn, ylabelFn func(float64) string, xticks []float64) {
	const w, hgt, left, right, top, bottom = 760.0, 320.0, 60.0, 170.0, 30.0, 40.0
	xa.p0, xa.p1 = left, w-right
	ya.p0, ya.p1 = hgt-bottom, top
	fmt.Fprintf(b, `<figure><svg viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img">`, w, hgt, w, hgt)
	fmt.Fprintf(b, `<text x="%.0f" y="18" font-weight="bold">%s</text>`, left, html.EscapeString(title))
	fmt.Fprintf(b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`, left, top, w-right-left, hgt-bottom-top)
	if xticks == nil {
		xticks = xa.ticks()
	}
	for _, t := range xticks {
		x := xa.pos(t)
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#eee"/><text x="%.1f" y="%.0f" font-size="11" text-anchor="middle">%s</text>`,
			x, top, x, hgt-bottom, x, hgt-bottom+14, html.EscapeString(xlabelFn(t)))
	}
	for _, t := range ya.ticks() {
		y := ya.pos(t)
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/><text x="%.0f" y="%.1f" font-size="11" text-anchor="end">%s</text>`,
			left, y, w-right, y, left-4, y+4, html.EscapeString(ylabelFn(t)))
	}
	fmt.Fprintf(b, `<text x="%.0f" y="%.0f" font-size="12" text-anchor="middle">%s</text>`, (left+w-right)/2, hgt-6, html.EscapeString(xlabel))
	fmt.Fprintf(b, `<text x="14" y="%.0f" font-size="12" text-anchor="middle" transform="rotate(-90 14 %.0f)">%s</text>`, (top+hgt-bottom)/2, (top+hgt-bottom)/2, html.EscapeString(ylabel))
	for i, s := range series {
		if len(s.pts) == 0 {
			continue
		}
		var pts strings.Builder
		for _, p := range s.pts {
			fmt.Fprintf(&pts, "%.1f,%.1f ", xa.pos(p[0]), ya.pos(p[1]))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>`, s.color, strings.TrimSpace(pts.String()))
		ly := top + 14 + float64(i)*16
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/><text x="%.0f" y="%.0f" font-size="12">%s</text>`,
			w-right+10, ly-4, w-right+28, ly-4, s.color, w-right+32, ly, html.EscapeString(s.name))
	}
	b.WriteString("</svg></figure>\n")
}

// HTML renders a self-contained report: no scripts, styles or images from
// anywhere else, charts as inline SVG.
func HTML(res *Results) string {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>balancer bench: ")
	b.WriteString(html.EscapeString(res.Profile))
	b.WriteString("</title>\n<style>body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}td:first-child,th:first-child{text-align:left}svg{font-family:sans-serif;background:#fff}figure{margin:1em 0}</style></head><body>\n")
	fmt.Fprintf(&b, "<h1>balancer bench: %s</h1>\n<p>%s</p>\n<p>Started %s. %s</p>\n", html.EscapeString(res.Profile),
		html.EscapeString(describe(res)), res.Started.Format("2006-01-02 15:04:05 MST"), html.EscapeString(res.ProfileHelp))
	ids := backendIDs(res)
	b.WriteString("<table><tr>")
	for _, h := range header(ids) {
		fmt.Fprintf(&b, "<th>%s</th>", html.EscapeString(h))
	}
	b.WriteString("</tr>\n")
	for _, r := range res.Runs {
		b.WriteString("<tr>")
		for _, c := range row(r, ids) {
			fmt.Fprintf(&b, "<td>%s</td>", html.EscapeString(c))
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table>\n<p>MAX/MEAN: the busiest backend's in-flight plus queued requests over the mean across backends, sampled every 50 ms from the backends themselves and averaged over the run (1 is perfectly even). STALE: age of the oldest live peer report in the nodes' gossip views (from /metrics), mean and max.</p>\n")
	if o := res.Overhead; o != nil {
		fmt.Fprintf(&b, "<p>Proxy overhead on this profile (best algorithm, %s): throughput %.2f&times; direct, p50 %.2f&times; direct.</p>\n", html.EscapeString(o.Algorithm), o.RPSRatio, o.P50Ratio)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(&b, "<p><b>Note:</b> %s</p>\n", html.EscapeString(n))
	}

	// Latency CDF, log x.
	var cdf, tail []chartSeries
	lo, hi := math.Inf(1), 0.0
	for i, r := range res.Runs {
		if len(r.CDF) == 0 {
			continue
		}
		s := chartSeries{name: r.Name, color: palette[i%len(palette)]}
		t := chartSeries{name: r.Name, color: s.color}
		for _, p := range r.CDF {
			v := math.Max(p.MS, 0.01)
			lo, hi = math.Min(lo, v), math.Max(hi, v)
			s.pts = append(s.pts, [2]float64{v, p.Frac})
			if p.Frac >= 0.5 {
				t.pts = append(t.pts, [2]float64{math.Min(-math.Log10(math.Max(1-p.Frac, 1e-4)), 4), v})
			}
		}
		cdf, tail = append(cdf, s), append(tail, t)
	}
	if len(cdf) > 0 {
		lo = math.Pow(10, math.Floor(math.Log10(lo)))
		hi = math.Pow(10, math.Ceil(math.Log10(hi)))
		b.WriteString("<h2>Latency</h2>\n")
		svgChart(&b, "Latency CDF per run (log scale)", "latency (ms)", "fraction of requests", cdf,
			axis{lo: lo, hi: hi, log: true}, axis{lo: 0, hi: 1}, tickLabel, tickLabel, nil)
		pl := func(x float64) string {
			return map[float64]string{0.30103: "p50", 1: "p90", 2: "p99", 3: "p99.9", 4: "p99.99"}[math.Round(x*1e5)/1e5]
		}
		svgChart(&b, "Latency by percentile (tail)", "percentile", "latency (ms, log)", tail,
			axis{lo: 0.30103, hi: 4}, axis{lo: lo, hi: hi, log: true}, pl, tickLabel, []float64{0.30103, 1, 2, 3, 4})
	}
	// In-flight over time, one chart per run.
	first := true
	for _, r := range res.Runs {
		if r.InFlight == nil || len(r.InFlight.Values) == 0 {
			continue
		}
		if first {
			b.WriteString("<h2>Per-backend in-flight + queued over time</h2>\n")
			first = false
		}
		var mx int64 = 1
		for _, row := range r.InFlight.Values {
			for _, v := range row {
				mx = max(mx, v)
			}
		}
		var ss []chartSeries
		n := len(r.InFlight.Values)
		step := max(1, n/400)
		for bi, id := range r.InFlight.Backends {
			s := chartSeries{name: id, color: palette[bi%len(palette)]}
			for t := 0; t < n; t += step {
				s.pts = append(s.pts, [2]float64{float64(t) * r.InFlight.IntervalMS / 1000, float64(r.InFlight.Values[t][bi])})
			}
			ss = append(ss, s)
		}
		title := r.Name
		if r.Balance != nil {
			title += fmt.Sprintf(" (max/mean %.2f)", r.Balance.MeanRatio)
		}
		svgChart(&b, title, "seconds into the measured run", "in flight + queued", ss,
			axis{lo: 0, hi: math.Max(float64(n-1)*r.InFlight.IntervalMS/1000, 0.001)}, axis{lo: 0, hi: float64(mx)}, tickLabel, tickLabel, nil)
	}
	b.WriteString("</body></html>\n")
	return b.String()
}
