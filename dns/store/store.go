// Package store keeps dnsd's API state in a bbolt file: hosted zones
// created through the API, the change batches applied to every zone (in
// order, as a journal that is replayed at start and serves IXFR) and health
// checks. Every write is one bbolt transaction, synced before it returns,
// so an acknowledged change survives a crash and a failed one leaves
// nothing behind.
package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/edgestack/edgestack/internal/health"
	bolt "go.etcd.io/bbolt"
	"go.yaml.in/yaml/v3"
)

var (
	bZones   = []byte("zones")
	bBatches = []byte("batches")
	bHealth  = []byte("healthchecks")
)

// ErrNotFound is returned for a missing zone or check.
var ErrNotFound = errors.New("not found")

// Zone is a stored zone: an API-managed hosted zone, or a file zone that
// has change batches.
type Zone struct {
	Name        string    `json:"name"`
	View        string    `json:"view,omitempty"`
	File        bool      `json:"file,omitempty"` // the base comes from a master file
	SOAEmail    string    `json:"soa_email,omitempty"`
	Nameservers []string  `json:"nameservers,omitempty"`
	Serial      uint32    `json:"serial"` // serial at creation
	Created     time.Time `json:"created"`
	// Batches are the stored change batches in order (filled by Zones).
	Batches []json.RawMessage `json:"-"`
}

// Store is the bbolt-backed store.
type Store struct {
	db     *bolt.DB
	remove string // file to remove on Close (memory stores)
}

// Open opens or creates the store at path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("dns/store: open %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// OpenMemory opens a throwaway store (a temporary file, not synced,
// removed on Close).
func OpenMemory() (*Store, error) {
	f, err := os.CreateTemp("", "dnsd-*.db")
	if err != nil {
		return nil, fmt.Errorf("dns/store: %w", err)
	}
	f.Close()
	db, err := bolt.Open(f.Name(), 0o600, &bolt.Options{NoSync: true, Timeout: time.Second})
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("dns/store: %w", err)
	}
	s := &Store{db: db, remove: f.Name()}
	if err := s.init(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bZones, bBatches, bHealth} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close closes the store.
func (s *Store) Close() error {
	err := s.db.Close()
	if s.remove != "" {
		os.Remove(s.remove)
	}
	return err
}

func zoneKey(view, name string) []byte { return []byte(view + "\x00" + name) }

// Zones returns every stored zone with its batches.
func (s *Store) Zones() ([]*Zone, error) {
	var out []*Zone
	err := s.db.View(func(tx *bolt.Tx) error {
		bb := tx.Bucket(bBatches)
		return tx.Bucket(bZones).ForEach(func(k, v []byte) error {
			z := &Zone{}
			if err := json.Unmarshal(v, z); err != nil {
				return fmt.Errorf("zone %q: %w", k, err)
			}
			if b := bb.Bucket(k); b != nil {
				if err := b.ForEach(func(_, v []byte) error {
					z.Batches = append(z.Batches, json.RawMessage(append([]byte(nil), v...)))
					return nil
				}); err != nil {
					return err
				}
			}
			out = append(out, z)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("dns/store: %w", err)
	}
	return out, nil
}

// GetZone returns the stored record of one zone (without batches).
func (s *Store) GetZone(view, name string) (*Zone, error) {
	var z *Zone
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bZones).Get(zoneKey(view, name))
		if v == nil {
			return ErrNotFound
		}
		z = &Zone{}
		return json.Unmarshal(v, z)
	})
	return z, err
}

// PutZone creates or replaces a zone record.
func (s *Store) PutZone(z *Zone) error {
	v, err := json.Marshal(z)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bZones).Put(zoneKey(z.View, z.Name), v)
	})
}

// DeleteZone removes a zone and its batches.
func (s *Store) DeleteZone(view, name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		k := zoneKey(view, name)
		if tx.Bucket(bZones).Get(k) == nil {
			return ErrNotFound
		}
		if err := tx.Bucket(bZones).Delete(k); err != nil {
			return err
		}
		if tx.Bucket(bBatches).Bucket(k) != nil {
			return tx.Bucket(bBatches).DeleteBucket(k)
		}
		return nil
	})
}

// AppendBatch stores a batch for a zone, creating the zone record z if
// it is not stored yet, in one transaction.
func (s *Store) AppendBatch(z *Zone, batch []byte) error {
	zv, err := json.Marshal(z)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		k := zoneKey(z.View, z.Name)
		if tx.Bucket(bZones).Get(k) == nil {
			if err := tx.Bucket(bZones).Put(k, zv); err != nil {
				return err
			}
		}
		b, err := tx.Bucket(bBatches).CreateBucketIfNotExists(k)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		var sk [8]byte
		binary.BigEndian.PutUint64(sk[:], seq)
		return b.Put(sk[:], batch)
	})
}

// CompactBatches replaces a zone's n oldest batches with squashed (nil:
// with nothing), stored under the key of the n-th so that it stays before
// the rest, in one transaction.
func (s *Store) CompactBatches(view, name string, n int, squashed []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bBatches).Bucket(zoneKey(view, name))
		if b == nil {
			return fmt.Errorf("zone %s has no stored batches", name)
		}
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil && len(keys) < n; k, _ = c.Next() {
			keys = append(keys, slices.Clone(k))
		}
		if len(keys) < n {
			return fmt.Errorf("zone %s has %d stored batches, fewer than the %d to compact", name, len(keys), n)
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if squashed == nil || n == 0 {
			return nil
		}
		return b.Put(keys[n-1], squashed)
	})
}

// HealthChecks returns the stored checks.
func (s *Store) HealthChecks() (map[string]health.CheckConfig, error) {
	out := map[string]health.CheckConfig{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bHealth).ForEach(func(k, v []byte) error {
			var c health.CheckConfig
			if err := yaml.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("health check %q: %w", k, err)
			}
			out[string(k)] = c
			return nil
		})
	})
	return out, err
}

// PutHealthCheck stores a check.
func (s *Store) PutHealthCheck(id string, c health.CheckConfig) error {
	v, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bHealth).Put([]byte(id), v) })
}

// DeleteHealthCheck removes a check.
func (s *Store) DeleteHealthCheck(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bHealth).Get([]byte(id)) == nil {
			return ErrNotFound
		}
		return tx.Bucket(bHealth).Delete([]byte(id))
	})
}
