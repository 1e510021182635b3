package store

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/raft"
)

// Operators' backups use the Raft snapshot format (snapshot.go): versioned,
// every byte covered by a SHA-256 checksum at its end, so a truncated or
// altered backup is refused whole.

// WriteSnapshot writes st in the snapshot format, for a backup. A backup
// is consistent when st is (Store.ConsistentState: every write
// acknowledged before it is in it).
func WriteSnapshot(w io.Writer, st *State) error { return writeSnapshot(w, st) }

// SnapshotInfo describes a saved snapshot.
type SnapshotInfo struct {
	// Index is the last command the snapshot's state includes.
	Index uint64 `json:"index"`
	// Size is the snapshot's length in bytes.
	Size int64 `json:"size"`
	// Hash is the state's hash (State.Hash), equal for equal states.
	Hash string `json:"hash"`
}

// InspectSnapshot reads a whole snapshot, checks its checksum and says what
// it holds. A damaged snapshot returns an error wrapping ErrSnapshotInvalid.
func InspectSnapshot(r io.Reader) (SnapshotInfo, error) {
	cr := &countingReader{r: r}
	db, index, err := readSnapshot(cr)
	if err != nil {
		return SnapshotInfo{}, err
	}
	d, err := (&State{txn: db.Txn(false), index: index}).Digest()
	if err != nil {
		return SnapshotInfo{}, err
	}
	return SnapshotInfo{Index: index, Size: cr.n, Hash: d.Hash}, nil
}

// RestoreSnapshot replaces the whole cluster's state with a saved snapshot:
// the leader installs it and every other server takes it from the leader.
// The cluster's own membership stays as it is, so a backup restores into a
// fresh cluster of other servers. The snapshot is spooled to the data
// directory and checked whole first: a damaged one is refused before
// anything changes. Leader only.
func (s *Store) RestoreSnapshot(ctx context.Context, r io.Reader) (SnapshotInfo, error) {
	if !s.IsLeader() {
		return SnapshotInfo{}, s.notLeader()
	}
	f, err := os.CreateTemp(s.cfg.DataDir, "restore-*.snap")
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	if _, err := io.Copy(f, r); err != nil {
		return SnapshotInfo{}, fmt.Errorf("receive snapshot: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return SnapshotInfo{}, err
	}
	info, err := InspectSnapshot(f)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return SnapshotInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return SnapshotInfo{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return SnapshotInfo{}, err
	}
	// Raft copies the whole file and wants its exact size.
	info.Size = fi.Size()
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: info.Index, Size: info.Size}
	if err := s.raft.Restore(meta, f, s.cfg.ApplyTimeout); err != nil {
		return SnapshotInfo{}, s.raftError(err)
	}
	// The restored state carries the backup's own index, which may be
	// below what every server had applied; whoever waits for the next
	// index (route and assignment watches) would wait for a write that
	// might not come. A no-op moves every server's applied index past the
	// restore, changing nothing in the state.
	if _, err := s.Apply(ctx, &Noop{}); err != nil {
		return info, fmt.Errorf("restored, but the index after it was not committed: %w", err)
	}
	return info, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
