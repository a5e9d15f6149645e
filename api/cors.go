package api

import (
	"net/http"
	"slices"
	"time"

	"github.com/gin-contrib/cors"
	"github.com/gin-gonic/gin"
)

// corsMiddleware lets web pages from the given origins ("*": any) call the API from a
// browser. Requests without an Origin (curl, SDKs) and same-origin ones (the /docs page)
// pass untouched; a browser request from another origin gets a JSON 403.
func corsMiddleware(origins []string) gin.HandlerFunc {
	cfg := cors.Config{
		AllowMethods: []string{http.MethodGet, http.MethodPost, http.MethodOptions},
		AllowHeaders: []string{"Authorization", "Content-Type"},
		MaxAge:       12 * time.Hour,
	}
	if slices.Contains(origins, "*") {
		cfg.AllowAllOrigins = true
	} else {
		cfg.AllowOrigins = origins
	}
	handle := cors.New(cfg)
	return func(c *gin.Context) {
		origin := c.GetHeader("Origin")
		switch {
		case origin == "" || origin == "http://"+c.Request.Host || origin == "https://"+c.Request.Host:
			c.Next()
		case cfg.AllowAllOrigins || slices.Contains(origins, origin):
			handle(c)
		default:
			abort(c, &apiError{Status: http.StatusForbidden, Type: typeInvalid,
				Message: "web pages from " + origin + " may not call this server (start conchd with --cors-origin " + origin + ")"})
		}
	}
}
