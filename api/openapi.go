package api

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3 description of every route, workspace and admin; a test keeps
// it and the router in step.
//
//go:embed openapi.json
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPI)
}
