package store

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// A full disk, as hashicorp/raft meets it. The log and the stable store
// (current term, vote) share one bolt file in the data directory.
//
//   - A follower cannot append entries: it refuses them, stops applying, and
//     the leader keeps retrying; the other servers go on committing. Once
//     space is back it appends and catches up, without a restart. Writes
//     sent to it are forwarded and committed, but it cannot show their
//     result: CatchUp answers ErrBehind after ApplyTimeout instead of
//     waiting for the space to come back.
//   - The leader cannot append its own new entries: raft fails them and
//     steps down. Nothing of them reached another server, so raftError
//     makes that a retryable ErrNoLeader: a write goes on to the next
//     leader (retryOnLeader) instead of failing.
//   - Raft panics when it cannot save a new term, which a full server meets
//     as soon as the others elect a leader without it. bolt often finds a
//     freed page for so small a write, but not always; patientStable makes
//     such a write wait for space instead, so the server stalls (it answers
//     no Raft calls) rather than exits, and carries on when space returns.

// diskFull reports an error of a disk with no space left.
func diskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// patientStable is the stable store, retrying writes that fail for want of
// space until they succeed or the store shuts down. Raft must not act on a
// term or vote it has not saved, and a write that has not returned is one
// it has not acted on: waiting is as safe as a slow disk.
type patientStable struct {
	raft.StableStore
	logger   *slog.Logger
	retry    time.Duration
	shutdown <-chan struct{}
}

func (p *patientStable) Set(key, val []byte) error {
	return p.patiently(string(key), func() error { return p.StableStore.Set(key, val) })
}

func (p *patientStable) SetUint64(key []byte, val uint64) error {
	return p.patiently(string(key), func() error { return p.StableStore.SetUint64(key, val) })
}

func (p *patientStable) patiently(key string, write func() error) error {
	var warned time.Time
	for {
		err := write()
		if err == nil || !diskFull(err) {
			return err
		}
		if time.Since(warned) >= 10*time.Second {
			p.logger.Error("cannot save Raft's "+key+": the disk is full; this server waits for space and takes no part in the cluster meanwhile", "error", err)
			warned = time.Now()
		}
		select {
		case <-p.shutdown:
			return fmt.Errorf("shut down while waiting for disk space to save %s: %w", key, err)
		case <-time.After(p.retry):
		}
	}
}
