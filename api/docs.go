package api

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// The API description and the page that shows it are files of their own so that they can
// be read and edited as what they are; both are compiled into the binary.

//go:embed openapi.json
var openAPI []byte

//go:embed docs.html
var docsPage []byte

func serveOpenAPI(c *gin.Context) { c.Data(http.StatusOK, "application/json", openAPI) }

func serveDocs(c *gin.Context) { c.Data(http.StatusOK, "text/html; charset=utf-8", docsPage) }
