package store

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-memdb"
)

func applyAccountCreate(txn *memdb.Txn, index uint64, c *AccountCreate) error {
	a := c.Account
	if err := requireID("account", a.ID); err != nil {
		return err
	}
	if err := ValidateEmail(a.Email); err != nil {
		return err
	}
	if !strings.HasPrefix(a.PasswordHash, "$argon2id$") {
		return invalidf("account password hash must be an argon2id PHC string")
	}
	if err := validateTime("account creation time", a.CreatedAt); err != nil {
		return err
	}
	if existing, err := first[*Account](txn, tableAccounts, "id", a.ID); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: account %q", ErrAlreadyExists, a.ID)
	}
	if taken, err := first[*Account](txn, tableAccounts, "email", a.Email); err != nil {
		return err
	} else if taken != nil {
		return fmt.Errorf("%w: an account with email %q", ErrAlreadyExists, a.Email)
	}
	if a.Operator && c.InvitationID == "" {
		return invalidf("an account is made an operator only by an operator invitation")
	}
	if c.InvitationID != "" {
		inv, err := first[*Invitation](txn, tableInvitations, "id", c.InvitationID)
		if err != nil {
			return err
		}
		switch {
		case inv != nil && a.Operator != inv.Operator:
			return invalidf("account %q: operator is %v, its invitation's %v", a.ID, a.Operator, inv.Operator)
		case inv == nil:
			return fmt.Errorf("%w: invitation %q (used or withdrawn)", ErrNotFound, c.InvitationID)
		case !c.Now.Before(inv.ExpiresAt):
			return fmt.Errorf("%w: invitation %q expired at %s", ErrConflict, inv.ID, inv.ExpiresAt.Format("2006-01-02 15:04 MST"))
		case inv.Email != "" && inv.Email != a.Email:
			return fmt.Errorf("%w: invitation %q is for another email address", ErrConflict, inv.ID)
		case inv.OrgID != "" && (c.Org != nil || inv.OrgID != a.OrgID):
			return fmt.Errorf("%w: invitation %q is into org %q", ErrConflict, inv.ID, inv.OrgID)
		case inv.OrgID == "" && c.Org == nil:
			return fmt.Errorf("%w: invitation %q is for an org of one's own", ErrConflict, inv.ID)
		}
		if err := txn.Delete(tableInvitations, inv); err != nil {
			return err
		}
	}
	if c.Org != nil {
		if c.Org.ID != a.OrgID {
			return invalidf("account's org %q is not the org created with it (%q)", a.OrgID, c.Org.ID)
		}
		// The same checks as any org's creation, in this transaction.
		if err := applyOrgCreate(txn, index, &OrgCreate{Org: *c.Org}); err != nil {
			return err
		}
	} else if _, err := mustGetOrg(txn, a.OrgID); err != nil {
		return err
	}
	a.CreatedAt = a.CreatedAt.UTC()
	a.CreateIndex, a.ModifyIndex = index, index
	return txn.Insert(tableAccounts, &a)
}

func applyAccountDelete(txn *memdb.Txn, c *AccountDelete) error {
	a, err := first[*Account](txn, tableAccounts, "id", c.ID)
	if err != nil {
		return err
	}
	if a == nil {
		return fmt.Errorf("%w: account %q", ErrNotFound, c.ID)
	}
	if _, err := txn.DeleteAll(tableWebSessions, "account", a.ID); err != nil {
		return err
	}
	return txn.Delete(tableAccounts, a)
}

func applyAccountSetOperator(txn *memdb.Txn, index uint64, c *AccountSetOperator) error {
	a, err := first[*Account](txn, tableAccounts, "id", c.AccountID)
	if err != nil {
		return err
	}
	if a == nil {
		return fmt.Errorf("%w: account %q", ErrNotFound, c.AccountID)
	}
	changed := *a
	changed.Operator = c.Operator
	changed.ModifyIndex = index
	return txn.Insert(tableAccounts, &changed)
}

func applyWebSessionCreate(txn *memdb.Txn, c *WebSessionCreate) error {
	s := c.Session
	if err := requireID("web session", s.ID); err != nil {
		return err
	}
	if err := validateHexSHA256("web session hash", s.Hash); err != nil {
		return err
	}
	if err := validateTime("web session creation time", s.CreatedAt); err != nil {
		return err
	}
	if err := validateTime("web session expiry", s.ExpiresAt); err != nil {
		return err
	}
	if !s.ExpiresAt.After(s.CreatedAt) {
		return invalidf("web session must expire after it is created")
	}
	if a, err := first[*Account](txn, tableAccounts, "id", s.AccountID); err != nil {
		return err
	} else if a == nil {
		return fmt.Errorf("%w: account %q", ErrNotFound, s.AccountID)
	}
	if existing, err := first[*WebSession](txn, tableWebSessions, "id", s.ID); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: web session %q", ErrAlreadyExists, s.ID)
	}
	if existing, err := first[*WebSession](txn, tableWebSessions, "hash", s.Hash); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: web session with this hash", ErrAlreadyExists)
	}
	s.CreatedAt, s.ExpiresAt = s.CreatedAt.UTC(), s.ExpiresAt.UTC()
	return txn.Insert(tableWebSessions, &s)
}

func applyWebSessionDelete(txn *memdb.Txn, c *WebSessionDelete) error {
	s, err := first[*WebSession](txn, tableWebSessions, "id", c.ID)
	if err != nil || s == nil {
		return err
	}
	return txn.Delete(tableWebSessions, s)
}

func applyWebSessionsExpire(txn *memdb.Txn, c *WebSessionsExpire) error {
	sessions, err := all[*WebSession](txn, tableWebSessions, "id")
	if err != nil {
		return err
	}
	for _, s := range sessions {
		if s.ExpiresAt.Before(c.Before) {
			if err := txn.Delete(tableWebSessions, s); err != nil {
				return err
			}
		}
	}
	return nil
}

func applyInvitationCreate(txn *memdb.Txn, c *InvitationCreate) error {
	inv := c.Invitation
	if err := requireID("invitation", inv.ID); err != nil {
		return err
	}
	if err := validateHexSHA256("invitation hash", inv.Hash); err != nil {
		return err
	}
	if inv.Email != "" {
		if err := ValidateEmail(inv.Email); err != nil {
			return err
		}
	}
	if err := validateTime("invitation creation time", inv.CreatedAt); err != nil {
		return err
	}
	if err := validateTime("invitation expiry", inv.ExpiresAt); err != nil {
		return err
	}
	if !inv.ExpiresAt.After(inv.CreatedAt) {
		return invalidf("invitation must expire after it is created")
	}
	if inv.OrgID != "" {
		if _, err := mustGetOrg(txn, inv.OrgID); err != nil {
			return err
		}
	}
	if existing, err := first[*Invitation](txn, tableInvitations, "id", inv.ID); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: invitation %q", ErrAlreadyExists, inv.ID)
	}
	if existing, err := first[*Invitation](txn, tableInvitations, "hash", inv.Hash); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: invitation with this hash", ErrAlreadyExists)
	}
	inv.CreatedAt, inv.ExpiresAt = inv.CreatedAt.UTC(), inv.ExpiresAt.UTC()
	return txn.Insert(tableInvitations, &inv)
}

func applyInvitationDelete(txn *memdb.Txn, c *InvitationDelete) error {
	inv, err := first[*Invitation](txn, tableInvitations, "id", c.ID)
	if err != nil {
		return err
	}
	if inv == nil {
		return fmt.Errorf("%w: invitation %q", ErrNotFound, c.ID)
	}
	return txn.Delete(tableInvitations, inv)
}

// deleteOrgAccounts removes an org's accounts, their sessions and the
// invitations into the org (part of OrgDelete).
func deleteOrgAccounts(txn *memdb.Txn, orgID string) error {
	accounts, err := all[*Account](txn, tableAccounts, "org", orgID)
	if err != nil {
		return err
	}
	for _, a := range accounts {
		if _, err := txn.DeleteAll(tableWebSessions, "account", a.ID); err != nil {
			return err
		}
	}
	for _, table := range []string{tableAccounts, tableInvitations} {
		if _, err := txn.DeleteAll(table, "org", orgID); err != nil {
			return err
		}
	}
	return nil
}
