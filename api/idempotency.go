package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/agenthost/agenthost/store"
)

// Idempotency-Key on a POST makes a retry safe, as clients of payment and
// cloud APIs expect:
//
//   - the first request claims the key through Raft (a record without a
//     response), runs, and stores its response in the record;
//   - a retry with the same key and body gets that response again, with
//     Idempotent-Replayed: true;
//   - a retry with a different body (or path) is 422;
//   - a retry while the first still runs, on any server, is 409;
//   - a response of 5xx is not kept: the claim is released so that a retry
//     runs again (a create then finds its agent by the ID derived from the
//     key, see agentIDFor, instead of making a second one).
//
// Responses are kept for idempotencyTTL; claims expire after claimTTL, so a
// server that died mid-request does not hold a key for longer.
const (
	idempotencyTTL  = 24 * time.Hour
	claimTTL        = 10 * time.Minute
	maxIdempotency  = 255
	replayedHeader  = "Idempotent-Replayed"
	idempotencyHdr  = "Idempotency-Key"
	sealedBodyLabel = "idempotency"
)

// idempotencyScope is the namespace of a caller's keys: its org, or the
// operator namespace for org-less operator tokens.
func idempotencyScope(p Principal) string {
	if p.Role == store.RoleOperator {
		return "operator:" + p.OrgID
	}
	return p.OrgID
}

type idempotencyKeyCtx struct{}

// idempotencyKey is the request's Idempotency-Key, for handlers that derive
// IDs from it.
func idempotencyKey(r *http.Request) string {
	k, _ := r.Context().Value(idempotencyKeyCtx{}).(string)
	return k
}

func (s *Server) idempotent(w http.ResponseWriter, r *http.Request, p Principal, h handlerFunc, sensitive bool) error {
	key := r.Header.Get(idempotencyHdr)
	if len(key) > maxIdempotency || !validRequestID(key) {
		return badRequest("Idempotency-Key must be 1-%d printable characters", maxIdempotency)
	}
	kr := s.keyring.Load()
	if sensitive && kr == nil {
		return badRequest("Idempotency-Key is not supported here: this response holds a secret and the server has no secrets key to seal it with")
	}
	limit := int64(maxJSONBody)
	if r.URL.Path != "" && bytes.HasSuffix([]byte(r.URL.Path), []byte("/files")) {
		limit = maxUploadBody
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return badRequest("request body is larger than %d bytes", limit)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	h256 := sha256.New()
	h256.Write([]byte(r.Method + " " + r.URL.Path + "\n"))
	h256.Write(body)
	hash := h256.Sum(nil)
	scope := idempotencyScope(p)

	if done, err := s.replay(r.Context(), w, scope, key, hash, false); done || err != nil {
		return err
	}
	owner := requestID(r)
	now := time.Now().UTC()
	claim := store.IdempotencyRecord{OrgID: scope, Key: key, RequestHash: hash, Owner: owner, CreatedAt: now, ExpiresAt: now.Add(claimTTL)}
	index, err := s.store.Apply(r.Context(), &store.IdempotencyPut{Record: claim})
	if err != nil {
		return err
	}
	if err := s.store.CatchUp(r.Context(), index); err != nil {
		return err
	}
	rec, err := s.store.State().Idempotency(scope, key)
	if err != nil {
		return err
	}
	if rec == nil || rec.Owner != owner || rec.StatusCode != 0 {
		// Another request claimed the key first. (This state has applied
		// our claim's index, so it knows every write before it.)
		if done, err := s.replay(r.Context(), w, scope, key, hash, true); done || err != nil {
			return err
		}
		return apiError(http.StatusConflict, CodeIdempotencyInUse, "a request with this Idempotency-Key is still in progress")
	}

	rw := &recorder{header: http.Header{}}
	ctx := context.WithValue(r.Context(), idempotencyKeyCtx{}, key)
	herr := h(rw, r.WithContext(ctx), p)
	status, respBody := rw.status, rw.body.Bytes()
	if herr != nil {
		e := s.report(r, herr)
		status = e.Status
		respBody = mustJSON(errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, RequestID: owner}})
	}
	// The claim is settled with a context of its own: a client that hung up
	// must not leave the key claimed.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	if status >= 500 {
		if _, err := s.store.Apply(sctx, &store.IdempotencyDelete{OrgID: scope, Key: key, Owner: owner}); err != nil {
			s.logger.Warn("could not release an idempotency claim; it expires on its own", "key", key, "error", err)
		}
	} else {
		final := claim
		final.StatusCode, final.Body, final.ExpiresAt = status, respBody, time.Now().UTC().Add(idempotencyTTL)
		if sensitive {
			if final.Body, final.BodyKeyID, err = kr.Seal(respBody, sealedBodyLabel+"/"+scope+"/"+key); err != nil {
				return err
			}
		}
		index, err := s.store.Apply(sctx, &store.IdempotencyPut{Record: final})
		if err != nil {
			s.logger.Warn("could not record an idempotent response; a retry will run again", "key", key, "error", err)
		} else if err := s.store.CatchUp(sctx, index); err != nil {
			// A retry on this server before it applies the record would
			// see the claim and answer 409, which is wrong but safe.
			s.logger.Warn("idempotent response recorded but not yet applied here", "key", key, "error", err)
		}
	}
	for k, v := range rw.header {
		w.Header()[k] = v
	}
	if herr != nil {
		return herr
	}
	w.WriteHeader(status)
	_, err = w.Write(respBody)
	return err
}

// replay answers from a stored response: done is true when it did (or
// found the key used with another body, the 422).
// fresh says the caller read a consistent state already.
func (s *Server) replay(ctx context.Context, w http.ResponseWriter, scope, key string, hash []byte, fresh bool) (done bool, err error) {
	rec, err := s.store.State().Idempotency(scope, key)
	if err != nil || rec == nil {
		return false, err
	}
	if !bytes.Equal(rec.RequestHash, hash) {
		return true, apiError(http.StatusUnprocessableEntity, CodeIdempotencyReused, "this Idempotency-Key was used with a different request")
	}
	if rec.StatusCode == 0 && !fresh {
		// This server may lag: the claim may be settled on the leader.
		st, err := s.store.ConsistentState(ctx)
		if err != nil {
			return false, err
		}
		if rec, err = st.Idempotency(scope, key); err != nil || rec == nil {
			return false, err
		}
	}
	if rec.StatusCode == 0 {
		if rec.ExpiresAt.Before(time.Now()) {
			return false, nil // an abandoned claim: run again
		}
		return true, apiError(http.StatusConflict, CodeIdempotencyInUse, "a request with this Idempotency-Key is still in progress")
	}
	body := rec.Body
	if rec.BodyKeyID != "" {
		kr := s.keyring.Load()
		if kr == nil {
			return true, errors.New("a sealed idempotent response cannot be opened without the secrets key")
		}
		if body, err = kr.Open(rec.BodyKeyID, rec.Body, sealedBodyLabel+"/"+scope+"/"+key); err != nil {
			return true, err
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(replayedHeader, "true")
	w.WriteHeader(rec.StatusCode)
	w.Write(body)
	return true, nil
}

// expireIdempotency deletes expired records, on the leader, every interval.
func (s *Server) expireIdempotency(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.store.IsLeader() {
			continue
		}
		if _, err := s.store.Apply(ctx, &store.IdempotencyDelete{Before: time.Now().UTC()}); err != nil && ctx.Err() == nil {
			s.logger.Warn("expire idempotency records", "error", err)
		}
		s.expireWebSessions(ctx)
	}
}

// expireWebSessions deletes the dashboard sessions past their expiry (reads
// ignore them already; this keeps the state from growing), proposing a
// command only when there is one to delete.
func (s *Server) expireWebSessions(ctx context.Context) {
	sessions, err := s.store.State().WebSessions()
	if err != nil {
		return
	}
	now := time.Now().UTC()
	for _, ws := range sessions {
		if ws.ExpiresAt.Before(now) {
			if _, err := s.store.Apply(ctx, &store.WebSessionsExpire{Before: now}); err != nil && ctx.Err() == nil {
				s.logger.Warn("expire web sessions", "error", err)
			}
			return
		}
	}
}

// recorder captures a response so that it can be stored before it is sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
