// Package api serves the tenant REST API of reference/000 and the operator
// API: authentication, org isolation, validation, and the mapping of store and
// scheduler errors to the documented status codes, in one place.
//
// Built so far: API tokens (token.go: ah_live_ tokens with a checksum, stored
// only as SHA-256 hashes) and bearer authentication with batched last-use
// records (auth.go). The handlers come with the rest of the "Tenant REST
// API" issue.
package api
