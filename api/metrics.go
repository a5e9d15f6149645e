package api

import (
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics live in a registry of their own (no global state): several servers in one
// process, as in tests, each count only their own requests.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	promptTokens *prometheus.CounterVec
	genTokens    *prometheus.CounterVec
	ttft         prometheus.Histogram
	tokenLatency prometheus.Histogram
	stepTime     prometheus.Histogram
	stepTokens   prometheus.Histogram
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conch_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "conch_http_request_duration_seconds", Help: "Time from request to the end of the response, by route.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"route"}),
		promptTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conch_prompt_tokens_total", Help: "Prompt tokens of finished requests, by model.",
		}, []string{"model"}),
		genTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conch_generated_tokens_total", Help: "Generated tokens, by model.",
		}, []string{"model"}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conch_time_to_first_token_seconds", Help: "Time from accepting a request to its first generated token (queueing and prefill).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		tokenLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conch_token_latency_seconds", Help: "Time between two generated tokens of one request.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		stepTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conch_decode_step_seconds", Help: "Duration of one decode step of the engine (all slots together).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		stepTokens: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "conch_decode_step_tokens", Help: "Tokens in one decode step: one per generating slot plus prompt chunks.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
	}
	gauge := func(name, help string, f func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(m.requests, m.duration, m.promptTokens, m.genTokens, m.ttft, m.tokenLatency, m.stepTime, m.stepTokens,
		gauge("conch_queue_depth", "Requests waiting for a slot.", func() float64 {
			if e := s.engine.Load(); e != nil {
				return float64(e.QueueDepth())
			}
			return 0
		}),
		gauge("conch_busy_slots", "Slots generating or reading a prompt.", func() float64 {
			if e := s.engine.Load(); e != nil {
				return float64(e.BusySlots())
			}
			return 0
		}),
		gauge("conch_slots", "Parallel slots.", func() float64 {
			if e := s.engine.Load(); e != nil {
				return float64(e.Parallel())
			}
			return 0
		}),
		gauge("conch_model_loaded", "1 once the model is loaded and requests are served.", func() float64 {
			if s.engine.Load() != nil {
				return 1
			}
			return 0
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) handler() gin.HandlerFunc {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return func(c *gin.Context) { h.ServeHTTP(c.Writer, c.Request) }
}
