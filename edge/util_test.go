package edge

import "sync/atomic"

type atomicInt struct{ v atomic.Int64 }

func (a *atomicInt) add() int64 { return a.v.Add(1) }
func (a *atomicInt) get() int64 { return a.v.Load() }
