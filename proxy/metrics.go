package proxy

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	wakes    prometheus.Counter
	active   *prometheus.GaugeVec
	sockets  *prometheus.GaugeVec
	// connections is not by route kind: a client connection is not bound
	// to one host.
	connections prometheus.Gauge
	// fastPath and handOffs count the fast path's requests and the
	// connections it handed to net/http's server (fastpath.go).
	fastPath, handOffs prometheus.Counter
	// ringPath counts the fast path's requests its io_uring loops served without
	// handing them over, ringConns the connections the loops took.
	ringPath, ringConns prometheus.Counter
	// byKind holds each route kind's series, looked up once here rather
	// than by label on every request.
	byKind [RouteAgentID + 1]kindMetrics
}

type kindMetrics struct {
	active, sockets prometheus.Gauge
	duration        prometheus.Observer
	// requests holds the requests_total series by status code, each
	// looked up on its first use (a label lookup costs more than the
	// count).
	requests [600]atomic.Pointer[prometheus.Counter]
}

func newMetrics(reg prometheus.Registerer, t *table) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agenthost", Subsystem: "proxy", Name: "requests_total",
			Help: "Requests the edge proxy answered, by route kind (api, agent_port, agent_id, none) and status code.",
		}, []string{"kind", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "proxy", Name: "request_duration_seconds",
			Help:    "Time to answer a request through the edge proxy (for streams and WebSockets: until they close), by route kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"kind"}),
		wakes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "agenthost", Subsystem: "proxy", Name: "agent_wakes_total",
			Help: "Stopped autostart agents the proxy started because a request came for them.",
		}),
	}
	m.active = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "agenthost", Subsystem: "proxy", Name: "active_requests",
		Help: "Requests being answered now, streams included, by route kind.",
	}, []string{"kind"})
	m.sockets = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "agenthost", Subsystem: "proxy", Name: "websockets",
		Help: "WebSocket connections open through the proxy now, by route kind.",
	}, []string{"kind"})
	m.connections = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "agenthost", Subsystem: "proxy", Name: "open_connections",
		Help: "Client connections open to the proxy now, HTTP/1.1 and HTTP/2 (a WebSocket, once upgraded, counts in agenthost_proxy_websockets instead).",
	})
	m.fastPath = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "agenthost", Subsystem: "proxy", Name: "fast_path_requests_total",
		Help: "Requests the fast path answered (agents' body-less reads over plain HTTP/1.1), of agenthost_proxy_requests_total.",
	})
	m.handOffs = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "agenthost", Subsystem: "proxy", Name: "handed_off_connections_total",
		Help: "Plain HTTP/1.1 connections the fast path handed to net/http's server, at a request it does not serve.",
	})
	m.ringPath = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "agenthost", Subsystem: "proxy", Name: "fast_path_io_uring_requests_total",
		Help: "Requests the fast path served on its io_uring loops without handing them to a goroutine (answered there, or ended there when the client or agent broke off), of agenthost_proxy_fast_path_requests_total.",
	})
	m.ringConns = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "agenthost", Subsystem: "proxy", Name: "fast_path_io_uring_connections_total",
		Help: "Connections the fast path's io_uring loops took (see Config.Rings).",
	})
	routes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "agenthost", Subsystem: "proxy", Name: "routes",
		Help: "Agents in the proxy's routing table.",
	}, func() float64 { return float64(t.size()) })
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.wakes, m.active, m.sockets, m.connections, m.fastPath, m.handOffs, m.ringPath, m.ringConns, routes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for k := range m.byKind {
		kind := RouteKind(k).String()
		km := &m.byKind[k]
		km.active, km.sockets, km.duration = m.active.WithLabelValues(kind), m.sockets.WithLabelValues(kind), m.duration.WithLabelValues(kind)
	}
	return m, nil
}

func (m *metrics) observe(kind RouteKind, code int, d time.Duration) {
	km := &m.byKind[kind]
	if code < 0 || code >= len(km.requests) {
		m.requests.WithLabelValues(kind.String(), strconv.Itoa(code)).Inc()
	} else if c := km.requests[code].Load(); c != nil {
		(*c).Inc()
	} else {
		c := m.requests.WithLabelValues(kind.String(), strconv.Itoa(code))
		km.requests[code].Store(&c)
		c.Inc()
	}
	km.duration.Observe(d.Seconds())
}
