// Package load holds the load test of issue 9: thousands of agent creates
// from concurrent clients across capped orgs, through the REST APIs of a
// three-server cluster with a real node agent, must admit exactly the caps,
// answer the rest 429 or 503, and leave no goroutine, file descriptor,
// process or port behind once the agents are deleted.
//
// The package has tests only; nothing may import it.
package load
