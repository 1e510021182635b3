package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fullDisk is a stable store whose writes fail with errs, one per write,
// before they succeed.
type fullDisk struct {
	*raft.InmemStore
	errs []error
}

func (f *fullDisk) SetUint64(key []byte, val uint64) error {
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return err
	}
	return f.InmemStore.SetUint64(key, val)
}

func TestPatientStableWaitsForSpace(t *testing.T) {
	enospc := &fs.PathError{Op: "write", Path: "raft.db", Err: syscall.ENOSPC}
	other := errors.New("bolt: database not open")
	for _, tc := range []struct {
		name      string
		errs      []error
		shutdown  bool
		wantErr   error
		wantSaved bool
	}{
		{name: "saved once space is back", errs: []error{enospc, enospc, fmt.Errorf("commit: %w", syscall.EDQUOT)}, wantSaved: true},
		{name: "other errors are raft's to handle", errs: []error{other}, wantErr: other},
		{name: "shutdown ends the wait with the disk's error", errs: []error{enospc, enospc, enospc, enospc}, shutdown: true, wantErr: syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			disk := &fullDisk{InmemStore: raft.NewInmemStore(), errs: tc.errs}
			shutdown := make(chan struct{})
			if tc.shutdown {
				close(shutdown)
			}
			p := &patientStable{StableStore: disk, logger: slog.New(slog.DiscardHandler), retry: time.Millisecond, shutdown: shutdown}
			err := p.SetUint64([]byte("CurrentTerm"), 7)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("SetUint64 = %v, want %v", err, tc.wantErr)
			}
			got, _ := disk.GetUint64([]byte("CurrentTerm"))
			if saved := got == 7; saved != tc.wantSaved {
				t.Fatalf("term saved = %v, want %v (errors left: %v)", saved, tc.wantSaved, disk.errs)
			}
		})
	}
}
