package dnsserver

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// rcodeNames is the closed set of rcode label values.
var rcodeNames = []string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "NOTAUTH", "BADVERS", "OTHER"}

func rcodeIndex(rcode int) int {
	switch rcode {
	case dns.RcodeSuccess:
		return 0
	case dns.RcodeFormatError:
		return 1
	case dns.RcodeServerFailure:
		return 2
	case dns.RcodeNameError:
		return 3
	case dns.RcodeNotImplemented:
		return 4
	case dns.RcodeRefused:
		return 5
	case dns.RcodeNotAuth:
		return 6
	case dns.RcodeBadVers:
		return 7
	}
	return 8
}

const (
	protoUDP = iota
	protoTCP
)

var protoNames = []string{"udp", "tcp"}

type metrics struct {
	queries     [2][9]prometheus.Counter // [proto][rcode]
	fast        prometheus.Counter
	truncated   prometheus.Counter
	dropped     prometheus.Counter
	rrl         *prometheus.CounterVec
	latency     [2]prometheus.Observer
	zones       prometheus.Gauge
	records     prometheus.Gauge
	serial      *prometheus.GaugeVec
	tcpConns    prometheus.Gauge
	tcpRejected prometheus.Counter
	changes     *prometheus.CounterVec
	xfrs        *prometheus.CounterVec
	notifies    *prometheus.CounterVec
	zoneLoads   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{}
	q := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgestack_dnsd_queries_total", Help: "DNS queries answered, by transport and response code.",
	}, []string{"proto", "rcode"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "edgestack_dnsd_response_duration_seconds", Help: "Time from reading a query to having its answer, by transport.",
		Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2},
	}, []string{"proto"})
	for p, pn := range protoNames {
		for r, rn := range rcodeNames {
			m.queries[p][r] = q.WithLabelValues(pn, rn)
		}
		m.latency[p] = lat.WithLabelValues(pn)
	}
	m.fast = prometheus.NewCounter(prometheus.CounterOpts{Name: "edgestack_dnsd_fast_path_hits_total", Help: "Queries answered from precomputed wire answers."})
	m.truncated = prometheus.NewCounter(prometheus.CounterOpts{Name: "edgestack_dnsd_truncated_total", Help: "UDP answers sent with TC=1."})
	m.dropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "edgestack_dnsd_dropped_total", Help: "Packets dropped without an answer (responses, runts)."})
	m.rrl = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgestack_dnsd_rrl_limited_total", Help: "UDP answers held back by response rate limiting, by action."}, []string{"action"})
	m.rrl.WithLabelValues("drop")
	m.rrl.WithLabelValues("slip")
	m.zones = prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgestack_dnsd_zones", Help: "Zones loaded (all views)."})
	m.records = prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgestack_dnsd_records", Help: "Records loaded (all zones)."})
	m.serial = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgestack_dnsd_zone_serial", Help: "SOA serial of each zone served."}, []string{"zone", "view"})
	m.tcpConns = prometheus.NewGauge(prometheus.GaugeOpts{Name: "edgestack_dnsd_tcp_connections", Help: "Open TCP connections."})
	m.tcpRejected = prometheus.NewCounter(prometheus.CounterOpts{Name: "edgestack_dnsd_tcp_rejected_total", Help: "TCP connections closed at once because max_connections was reached."})
	m.changes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgestack_dnsd_changes_total", Help: "Change batches, by result."}, []string{"result"})
	m.xfrs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgestack_dnsd_transfers_total", Help: "Zone transfers out, by type and result."}, []string{"type", "result"})
	m.notifies = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgestack_dnsd_notifies_total", Help: "NOTIFY messages sent, by result."}, []string{"result"})
	m.zoneLoads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgestack_dnsd_zone_loads_total", Help: "Zone file loads, by result."}, []string{"result"})
	for _, r := range []string{"applied", "rejected"} {
		m.changes.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.zoneLoads.WithLabelValues(r)
		m.notifies.WithLabelValues(r)
	}
	reg.MustRegister(q, lat, m.fast, m.truncated, m.dropped, m.rrl, m.zones, m.records, m.serial, m.tcpConns, m.tcpRejected, m.changes, m.xfrs, m.notifies, m.zoneLoads)
	return m
}
