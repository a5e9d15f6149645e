// Package api is conchd's HTTP layer: routes, request validation, streaming, errors,
// auth and metrics on Gin. It holds no model logic: it turns requests into
// engine.Requests and the engine's output into one of two wire formats, the original
// /generate contract and the OpenAI-compatible /v1 API.
package api

import (
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/magicconch/conch/internal/chat"
	"github.com/magicconch/conch/internal/engine"
)

// Config says how to serve.
type Config struct {
	ModelName        string   // public id of the base model (default "conch"); adapters use their own names
	APIKeys          []string // accepted Bearer tokens; none: no auth
	MaxBody          int64    // largest request body in bytes (default 1 MiB)
	DefaultMaxTokens int      // answer length when a request sets none (0: until the context is full)
	CORSOrigins      []string // web origins whose pages may call the API from a browser ("*": any; none: CORS off)
	Logger           *slog.Logger
}

// Server is the HTTP API. Create it before the model is loaded so that /healthz can say
// "not yet"; SetEngine makes it serve.
type Server struct {
	cfg     Config
	log     *slog.Logger
	engine  atomic.Pointer[engine.Engine]
	chat    atomic.Pointer[chat.Renderer]
	metrics *metrics
	router  *gin.Engine
	created atomic.Int64 // Unix time of the model's loading, for /v1/models
}

// New builds the routes.
func New(cfg Config) *Server {
	if cfg.ModelName == "" {
		cfg.ModelName = "conch"
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	s.created.Store(time.Now().Unix())
	s.metrics = newMetrics(s)
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true // c.Done()/c.Err() follow the request: a gone client cancels
	r.Use(s.recover(), s.observe(), s.limitBody())
	if len(cfg.CORSOrigins) > 0 {
		r.Use(corsMiddleware(cfg.CORSOrigins))
	}
	r.NoRoute(func(c *gin.Context) { abort(c, errNotFound("no route "+c.Request.Method+" "+c.Request.URL.Path)) })
	r.NoMethod(func(c *gin.Context) {
		abort(c, &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalid, Message: "method " + c.Request.Method + " not allowed on " + c.Request.URL.Path})
	})

	r.GET("/healthz", s.healthz)
	r.GET("/metrics", s.metrics.handler())
	r.GET("/openapi.json", serveOpenAPI)
	r.GET("/docs", serveDocs)
	r.GET("/", func(c *gin.Context) { c.Redirect(http.StatusFound, "/docs") })

	authed := r.Group("/", s.auth())
	authed.GET("/generate", s.generate)
	authed.GET("/v1/models", s.listModels)
	authed.GET("/v1/models/:model", s.getModel)
	authed.POST("/v1/chat/completions", s.chatCompletions)
	authed.POST("/v1/completions", s.completions)
	ollama := r.Group("/api", ollamaErrors, s.auth())
	ollama.GET("/tags", s.ollamaTags)
	ollama.POST("/generate", s.ollamaGenerate)
	ollama.POST("/chat", s.ollamaChat)
	s.router = r
	return s
}

// Handler is the http.Handler to serve.
func (s *Server) Handler() http.Handler { return s.router }

// SetEngine starts serving generation with e (nil: stop).
func (s *Server) SetEngine(e *engine.Engine) {
	s.created.Store(time.Now().Unix())
	if e != nil {
		s.chat.Store(chat.NewRenderer(e.Model(), s.log.Warn))
	}
	s.engine.Store(e)
}

func (s *Server) renderer(*engine.Engine) *chat.Renderer { return s.chat.Load() }

// ObserveFirstToken and ObserveToken feed the latency histograms; pass them to the
// engine's Config.OnFirstToken and OnToken.
func (s *Server) ObserveFirstToken(d time.Duration) { s.metrics.ttft.Observe(d.Seconds()) }
func (s *Server) ObserveToken(d time.Duration)      { s.metrics.tokenLatency.Observe(d.Seconds()) }

// ObserveStep feeds the decode-step histograms; pass it to the engine's Config.OnStep.
func (s *Server) ObserveStep(tokens int, d time.Duration) {
	s.metrics.stepTime.Observe(d.Seconds())
	s.metrics.stepTokens.Observe(float64(tokens))
}

func (s *Server) healthz(c *gin.Context) {
	if s.engine.Load() == nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"status": "loading"})
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// ready returns the engine, or answers 503 while the model is loading.
func (s *Server) ready(c *gin.Context) *engine.Engine {
	e := s.engine.Load()
	if e == nil {
		c.Header("Retry-After", "5")
		abort(c, &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Message: "the model is still loading"})
	}
	return e
}

func (s *Server) auth() gin.HandlerFunc {
	keys := make([][]byte, 0, len(s.cfg.APIKeys))
	for _, k := range s.cfg.APIKeys {
		if k != "" {
			keys = append(keys, []byte(k))
		}
	}
	return func(c *gin.Context) {
		if len(keys) == 0 {
			return
		}
		h := c.GetHeader("Authorization")
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			tok, ok = strings.CutPrefix(h, "bearer ")
		}
		if ok {
			tok = strings.TrimSpace(tok)
			for _, k := range keys {
				if subtle.ConstantTimeCompare([]byte(tok), k) == 1 {
					return
				}
			}
		}
		c.Header("WWW-Authenticate", `Bearer realm="conchd"`)
		msg := "missing API key: send Authorization: Bearer <key>"
		if ok {
			msg = "invalid API key"
		}
		abort(c, &apiError{Status: http.StatusUnauthorized, Type: typeAuth, Code: "invalid_api_key", Message: msg})
	}
}

func (s *Server) limitBody() gin.HandlerFunc {
	return func(c *gin.Context) {
		if c.Request.Body != nil {
			c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBody)
		}
	}
}

// recover turns a handler panic into a 500 so that no request can take the daemon down.
func (s *Server) recover() gin.HandlerFunc {
	return gin.CustomRecoveryWithWriter(nil, func(c *gin.Context, err any) {
		s.log.Error("handler panic", "path", c.Request.URL.Path, "panic", err)
		abort(c, &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: "internal error"})
	})
}

// observe counts every request by route and status and logs it.
func (s *Server) observe() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		status := c.Writer.Status()
		s.metrics.requests.WithLabelValues(route, statusLabel(status)).Inc()
		s.metrics.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		s.log.Debug("request", "method", c.Request.Method, "path", c.Request.URL.Path, "status", status, "duration", time.Since(start))
	}
}
