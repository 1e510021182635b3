// Package api serves the tenant REST API of reference/000 and the operator
// API: authentication, org isolation, validation, and the mapping of store and
// scheduler errors to the documented status codes, in one place.
//
// Built by the "Tenant REST API" issue; the package exists now so that the
// layout of DESIGN.md holds from the start.
package api
