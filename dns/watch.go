package dnsserver

import (
	"context"
	"os"
	"time"

	"github.com/edgestack/edgestack/dns/zone"
)

// fileStamp identifies a version of a zone file.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{st.ModTime(), st.Size()}
}

// watchFiles reloads zone files whose modification time or size changed.
// A file that fails to load is logged and counted; the last good version
// keeps serving.
func (s *Service) watchFiles(ctx context.Context) {
	defer s.wg.Done()
	for {
		iv := s.cfg.Load().ZoneCheckInterval.D()
		if iv <= 0 {
			iv = time.Second // check again later whether it got turned on
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(iv):
		}
		if s.cfg.Load().ZoneCheckInterval <= 0 {
			continue
		}
		s.checkFiles()
	}
}

func (s *Service) checkFiles() {
	type job struct {
		k     zkey
		file  string
		stamp fileStamp
	}
	var jobs []job
	s.mu.Lock()
	for k, zs := range s.zones {
		if zs.file == "" {
			continue
		}
		if st := stampOf(zs.file); st != zs.stamp {
			jobs = append(jobs, job{k, zs.file, st})
		}
	}
	s.mu.Unlock()
	for _, j := range jobs {
		z, err := zone.LoadFile(j.file, j.k.origin)
		s.mu.Lock()
		zs := s.zones[j.k]
		if zs == nil || zs.file != j.file {
			s.mu.Unlock()
			continue
		}
		zs.stamp = j.stamp // do not retry a broken file until it changes again
		if err != nil {
			s.mu.Unlock()
			s.m.zoneLoads.WithLabelValues("failure").Inc()
			s.log.Error("zone file changed but does not load; the last good version keeps serving", "zone", j.k.origin, "err", err)
			continue
		}
		s.m.zoneLoads.WithLabelValues("success").Inc()
		var journal []journalEntry
		if sz, err := s.store.GetZone(j.k.view, j.k.origin); err == nil {
			if all, err := s.store.Zones(); err == nil {
				for _, x := range all {
					if x.Name == sz.Name && x.View == sz.View {
						var rerr error
						z, journal, rerr = s.replay(z, x)
						if rerr != nil {
							s.log.Error("replaying stored changes", "zone", j.k.origin, "err", rerr)
						}
					}
				}
			}
		}
		old := zs.cur.Serial()
		zs.cur, zs.journal = z, journal
		s.publish()
		s.mu.Unlock()
		if z.Serial() != old {
			s.queueNotify(j.k.origin)
		}
		s.log.Info("zone file reloaded", "zone", j.k.origin, "serial", z.Serial())
	}
}
