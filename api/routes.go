package api

import "net/http"

// routes registers every endpoint. The tenant endpoints are reference 000's,
// plus list and delete for agents, the events stream, the container's logs,
// models and the org's own tokens; the operator endpoints administer orgs,
// tokens and nodes.
func (s *Server) routes() {
	get, post, put, patch, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete

	s.handle("/api/v1/agents",
		route{post, tenant, s.createAgent},
		route{get, tenant, s.listAgents})
	s.handle("/api/v1/agents/{agentId}",
		route{get, tenant, s.getAgent},
		route{del, tenant, s.deleteAgent})
	s.handle("/api/v1/agents/{agentId}/start", route{post, tenant, s.startAgent})
	s.handle("/api/v1/agents/{agentId}/stop", route{post, tenant, s.stopAgent})
	s.handle("/api/v1/agents/{agentId}/restart", route{post, tenant, s.restartAgent})
	s.handle("/api/v1/agents/{agentId}/messages",
		route{get, tenant, s.getMessages},
		route{post, tenant, s.sendMessage})
	s.handle("/api/v1/agents/{agentId}/usage", route{get, tenant, s.getUsage})
	s.handle("/api/v1/agents/{agentId}/abort", route{post, tenant, s.abort})
	s.handle("/api/v1/agents/{agentId}/files", route{post, tenant, s.uploadFile})
	s.handle("/api/v1/agents/{agentId}/permissions", route{get, tenant, s.listPermissions})
	s.handle("/api/v1/agents/{agentId}/permissions/{permissionId}/reply", route{post, tenant, s.replyPermission})
	s.handle("/api/v1/agents/{agentId}/questions", route{get, tenant, s.listQuestions})
	s.handle("/api/v1/agents/{agentId}/questions/{questionId}/reply", route{post, tenant, s.replyQuestion})
	s.handle("/api/v1/agents/{agentId}/events", route{get, tenant, s.events})
	s.handle("/api/v1/agents/{agentId}/logs", route{get, tenant, s.getLogs})

	s.handle("/api/v1/scopes",
		route{get, tenant, s.listScopes},
		route{post, tenant, s.createScope})
	s.handle("/api/v1/scopes/{scopeId}",
		route{get, tenant, s.getScope},
		route{patch, tenant, s.updateScope},
		route{del, tenant, s.deleteScope})
	s.handle("/api/v1/secrets",
		route{get, tenant, s.listSecrets},
		route{put, tenant, s.putSecret})
	s.handle("/api/v1/secrets/{key}", route{del, tenant, s.deleteSecret})
	s.handle("/api/v1/scopes/{scopeId}/secrets",
		route{get, tenant, s.listSecrets},
		route{put, tenant, s.putSecret})
	s.handle("/api/v1/scopes/{scopeId}/secrets/{key}", route{del, tenant, s.deleteSecret})

	s.handle("/api/v1/models", route{get, tenant, s.listModels})
	s.handle("/api/v1/tokens",
		route{get, tenant, s.listOwnTokens},
		route{post, tenant, s.createOwnToken})
	s.handle("/api/v1/tokens/{tokenId}", route{del, tenant, s.revokeOwnToken})

	s.handle("/api/v1/orgs",
		route{get, operator, s.listOrgs},
		route{post, operator, s.createOrg})
	s.handle("/api/v1/orgs/{orgId}",
		route{get, operator, s.getOrg},
		route{patch, operator, s.updateOrg})
	s.handle("/api/v1/orgs/{orgId}/tokens",
		route{get, operator, s.listOrgTokens},
		route{post, operator, s.createOrgToken})
	s.handle("/api/v1/orgs/{orgId}/tokens/{tokenId}", route{del, operator, s.revokeOrgToken})
	s.handle("/api/v1/nodes", route{get, operator, s.listNodes})
	s.handle("/api/v1/nodes/{nodeId}", route{del, operator, s.deleteNode})
	s.handle("/api/v1/nodes/{nodeId}/drain", route{post, operator, s.drainNode})
	s.handle("/api/v1/nodes/{nodeId}/undrain", route{post, operator, s.undrainNode})
	s.handle("/api/v1/operator/tokens",
		route{get, operator, s.listOperatorTokens},
		route{post, operator, s.createOperatorToken})
	s.handle("/api/v1/operator/tokens/{tokenId}", route{del, operator, s.revokeOperatorToken})
	s.handle("/api/v1/operator/bootstrap", route{post, public, s.bootstrap})

	// Dashboard accounts (accounts.go): sign-up, sign-in and sign-out
	// answer without a token; the session is the cookie's.
	s.handle("/api/v1/auth/signup", route{post, public, s.signUp})
	s.handle("/api/v1/auth/signin", route{post, public, s.signIn})
	s.handle("/api/v1/auth/signout", route{post, public, s.signOut})
	s.handle("/api/v1/auth/session", route{get, tenant, s.getSession})
	// Invitations (invitations.go): a tenant's into its own org, an
	// operator's any; operators also manage accounts and the sign-up mode.
	s.handle("/api/v1/invitations",
		route{get, tenant, s.listOwnInvitations},
		route{post, tenant, s.createOwnInvitation})
	s.handle("/api/v1/invitations/{invitationId}", route{del, tenant, s.withdrawOwnInvitation})
	s.handle("/api/v1/operator/invitations",
		route{get, operator, s.listInvitations},
		route{post, operator, s.createInvitation})
	s.handle("/api/v1/operator/invitations/{invitationId}", route{del, operator, s.deleteInvitation})
	s.handle("/api/v1/operator/accounts", route{get, operator, s.listAccounts})
	s.handle("/api/v1/operator/accounts/{accountId}",
		route{patch, operator, s.updateAccount},
		route{del, operator, s.deleteAccount})
	s.handle("/api/v1/operator/config",
		route{get, operator, s.getClusterConfig},
		route{patch, operator, s.updateClusterConfig})
	s.handle("/api/v1/operator/secrets/keys", route{get, operator, s.getSecretKeys})
	s.handle("/api/v1/operator/secrets/reseal", route{post, operator, s.resealSecrets})
	s.handle("/api/v1/operator/raft", route{get, operator, s.getRaft})
	s.handle("/api/v1/operator/raft/servers", route{post, operator, s.addRaftServer})
	s.handle("/api/v1/operator/raft/servers/{serverId}", route{del, operator, s.removeRaftServer})
	s.handle("/api/v1/operator/snapshot",
		route{get, operator, s.saveSnapshot},
		route{post, operator, s.restoreSnapshot})

	s.handle("/api/v1/openapi.json", route{get, public, s.openAPIDocument})
	s.handle("/docs", route{get, public, s.docsPage})
	s.mux.HandleFunc("/api/", s.notFoundHandler)
}
