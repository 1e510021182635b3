package api

import (
	_ "embed"
	"net/http"
)

// openAPIDocument is the OpenAPI 3.1 description of every endpoint; tests
// validate real responses against it.
//
//go:embed openapi.json
var openAPIDocument []byte

//go:embed docs.html
var docsPage []byte

// OpenAPIDocument returns the API's OpenAPI 3.1 document.
func OpenAPIDocument() []byte { return openAPIDocument }

func (s *Server) openAPIDocument(w http.ResponseWriter, _ *http.Request, _ Principal) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openAPIDocument)
	return err
}

func (s *Server) docsPage(w http.ResponseWriter, _ *http.Request, _ Principal) error {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, err := w.Write(docsPage)
	return err
}
