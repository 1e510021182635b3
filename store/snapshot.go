package store

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/hashicorp/go-memdb"
)

// Snapshot format, version 1:
//
//	magic      8 bytes  "AGHSNAP\n"
//	version    uint16, big endian
//	records    repeated: table uint8 (1-based position in tableOrder),
//	           length uvarint, JSON of one object
//	end        one zero byte
//	index      uint64, big endian: the last applied command index
//	checksum   32 bytes: SHA-256 of every byte before it
//
// Restore reads the whole stream into a fresh database and checks the
// checksum before anything is swapped in, so a truncated, corrupted or foreign
// snapshot is refused and the running state is untouched.

const snapshotVersion uint16 = 1

var snapshotMagic = []byte("AGHSNAP\n")

// maxSnapshotRecord bounds one record, so that a corrupted length cannot make
// Restore allocate without limit.
const maxSnapshotRecord = 64 << 20

func writeSnapshot(w io.Writer, s *State) error {
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 256<<10)
	bw.Write(snapshotMagic)
	binary.Write(bw, binary.BigEndian, snapshotVersion)
	tableNum := make(map[string]byte, len(tableOrder))
	for i, t := range tableOrder {
		tableNum[t] = byte(i + 1)
	}
	var lenBuf [binary.MaxVarintLen64]byte
	err := s.each(func(table string, obj any) error {
		b, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		bw.WriteByte(tableNum[table])
		bw.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(b)))])
		_, err = bw.Write(b)
		return err
	})
	if err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	bw.WriteByte(0)
	binary.Write(bw, binary.BigEndian, s.index)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("write snapshot checksum: %w", err)
	}
	return nil
}

// readSnapshot parses a snapshot into a new database. Every failure wraps
// ErrSnapshotInvalid.
func readSnapshot(r io.Reader) (*memdb.MemDB, uint64, error) {
	db, index, err := decodeSnapshot(r)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrSnapshotInvalid, err)
	}
	return db, index, nil
}

func decodeSnapshot(r io.Reader) (*memdb.MemDB, uint64, error) {
	hr := &hashingReader{r: bufio.NewReaderSize(r, 256<<10), h: sha256.New()}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(hr, magic); err != nil {
		return nil, 0, fmt.Errorf("read header: %w", noEOF(err))
	}
	if !bytes.Equal(magic, snapshotMagic) {
		return nil, 0, errors.New("not an agenthost snapshot")
	}
	var version uint16
	if err := binary.Read(hr, binary.BigEndian, &version); err != nil {
		return nil, 0, fmt.Errorf("read version: %w", noEOF(err))
	}
	if version != snapshotVersion {
		return nil, 0, fmt.Errorf("unknown snapshot format version %d (this server reads %d)", version, snapshotVersion)
	}

	db := newDB()
	txn := db.Txn(true)
	defer txn.Abort()
	for {
		tb, err := hr.ReadByte()
		if err != nil {
			return nil, 0, fmt.Errorf("read record: %w", noEOF(err))
		}
		if tb == 0 {
			break
		}
		if int(tb) > len(tableOrder) {
			return nil, 0, fmt.Errorf("unknown table number %d", tb)
		}
		table := tableOrder[tb-1]
		n, err := binary.ReadUvarint(hr)
		if err != nil {
			return nil, 0, fmt.Errorf("read record length: %w", noEOF(err))
		}
		if n > maxSnapshotRecord {
			return nil, 0, fmt.Errorf("record of %d bytes exceeds the limit", n)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(hr, buf); err != nil {
			return nil, 0, fmt.Errorf("read record: %w", noEOF(err))
		}
		obj := newTableObject(table)
		if err := json.Unmarshal(buf, obj); err != nil {
			return nil, 0, fmt.Errorf("decode %s record: %w", table, err)
		}
		if err := txn.Insert(table, obj); err != nil {
			return nil, 0, fmt.Errorf("insert %s record: %w", table, err)
		}
	}
	var index uint64
	if err := binary.Read(hr, binary.BigEndian, &index); err != nil {
		return nil, 0, fmt.Errorf("read index: %w", noEOF(err))
	}
	want := hr.h.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(hr.r, got); err != nil {
		return nil, 0, fmt.Errorf("read checksum: %w", noEOF(err))
	}
	if !bytes.Equal(got, want) {
		return nil, 0, errors.New("checksum mismatch")
	}
	if _, err := hr.r.ReadByte(); err != io.EOF {
		return nil, 0, errors.New("trailing data after checksum")
	}
	txn.Commit()
	return db, index, nil
}

func newTableObject(table string) any {
	switch table {
	case tableOrgs:
		return &Org{}
	case tableTokens:
		return &Token{}
	case tableAgents:
		return &Agent{}
	case tableNodes:
		return &Node{}
	case tableScopes:
		return &Scope{}
	case tableSecrets:
		return &Secret{}
	case tableIdempotency:
		return &IdempotencyRecord{}
	case tableConfig:
		return &configRow{}
	case tableIndex:
		return &indexRow{}
	case tableOrgUsage, tableNodeUsage:
		return &usageRow{}
	case tableAccounts:
		return &Account{}
	case tableWebSessions:
		return &WebSession{}
	case tableInvitations:
		return &Invitation{}
	}
	panic("store: table without object type: " + table)
}

// noEOF reports a clean EOF inside a snapshot as truncation.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// hashingReader hashes exactly the bytes its callers consume.
type hashingReader struct {
	r *bufio.Reader
	h hash.Hash
}

func (hr *hashingReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	hr.h.Write(p[:n])
	return n, err
}

func (hr *hashingReader) ReadByte() (byte, error) {
	b, err := hr.r.ReadByte()
	if err == nil {
		hr.h.Write([]byte{b})
	}
	return b, err
}
