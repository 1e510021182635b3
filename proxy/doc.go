// Package proxy is the edge proxy (`agenthost proxy`): it routes
// a<port>.<domain> and <agentId>.<domain> to the node hosting the agent and
// /api/* to control nodes, from a route table streamed by RouteService.
//
// Built by the "Edge proxy" issue; the package exists now so that the layout
// of DESIGN.md holds from the start.
package proxy
