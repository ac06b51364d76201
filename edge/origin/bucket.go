package origin

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
)

// BucketOptions configure a bucket origin.
type BucketOptions struct {
	Name string
	// Dir is the folder served as the site's root.
	Dir string
	// IndexDocument is served for a request naming a folder. Default
	// index.html.
	IndexDocument string
	// ErrorDocument (a path inside Dir) is served with status 404 when an
	// object does not exist. Default none (a short text 404).
	ErrorDocument string
	// CacheControl is sent with every object (e.g. "max-age=300").
	// Default none, so the behavior's default TTL applies.
	CacheControl string
}

// Bucket serves a local folder like an S3 static website: index and error
// documents, Content-Type by extension, ETag and Last-Modified from the
// file, conditional requests and Range via http.ServeContent. Paths can
// never leave Dir (os.Root).
type Bucket struct {
	opts BucketOptions
	root *os.Root
	rt   http.RoundTripper
}

// NewBucket opens the folder.
func NewBucket(o BucketOptions) (*Bucket, error) {
	if o.IndexDocument == "" {
		o.IndexDocument = "index.html"
	}
	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("bucket origin %q: %w", o.Name, err)
	}
	b := &Bucket{opts: o, root: root}
	b.rt = HandlerTransport(b)
	return b, nil
}

// Name returns the origin's name.
func (b *Bucket) Name() string { return b.opts.Name }

// RoundTrip serves req from the folder.
func (b *Bucket) RoundTrip(req *http.Request) (*http.Response, error) { return b.rt.RoundTrip(req) }

// Close releases the folder.
func (b *Bucket) Close() { _ = b.root.Close() }

// ServeHTTP serves one object.
func (b *Bucket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed on a bucket origin", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "."
	}
	f, fi, err := b.open(name)
	if err == nil && fi.IsDir() {
		f.Close()
		if !strings.HasSuffix(r.URL.Path, "/") {
			// S3 website behaviour: /dir -> /dir/
			loc := r.URL.Path + "/"
			if r.URL.RawQuery != "" {
				loc += "?" + r.URL.RawQuery
			}
			w.Header().Set("Location", loc)
			w.WriteHeader(http.StatusMovedPermanently)
			return
		}
		f, fi, err = b.open(path.Join(name, b.opts.IndexDocument))
	}
	if err != nil {
		b.notFound(w, r)
		return
	}
	defer f.Close()
	b.serve(w, r, f, fi, http.StatusOK)
}

func (b *Bucket) open(name string) (*os.File, fs.FileInfo, error) {
	f, err := b.root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		f.Close()
		return nil, nil, fs.ErrNotExist
	}
	return f, fi, nil
}

func (b *Bucket) notFound(w http.ResponseWriter, r *http.Request) {
	if b.opts.ErrorDocument != "" {
		if f, fi, err := b.open(strings.TrimPrefix(path.Clean("/"+b.opts.ErrorDocument), "/")); err == nil && !fi.IsDir() {
			defer f.Close()
			b.serve(w, r, f, fi, http.StatusNotFound)
			return
		}
	}
	http.Error(w, "404 object not found", http.StatusNotFound)
}

// ETag is the bucket's entity tag for a file: size and modification time.
func ETag(fi fs.FileInfo) string {
	return `"` + strconv.FormatInt(fi.Size(), 16) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 16) + `"`
}

func (b *Bucket) serve(w http.ResponseWriter, r *http.Request, f *os.File, fi fs.FileInfo, status int) {
	h := w.Header()
	h.Set("ETag", ETag(fi))
	if b.opts.CacheControl != "" {
		h.Set("Cache-Control", b.opts.CacheControl)
	}
	if status == http.StatusOK {
		http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
		return
	}
	// The error document: no conditionals or ranges, just the page.
	if ct := mimeType(fi.Name()); ct != "" {
		h.Set("Content-Type", ct)
	}
	h.Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = io.Copy(w, f)
	}
}

// HandlerTransport turns an http.Handler into a RoundTripper: the handler
// runs in its own goroutine writing into a pipe, and RoundTrip returns as
// soon as it has written its header. The goroutine ends when the handler
// returns; closing the response body makes its writes fail, so an
// abandoned response stops it too.
func HandlerTransport(h http.Handler) http.RoundTripper { return handlerRT{h} }

type handlerRT struct{ h http.Handler }

func (t handlerRT) RoundTrip(req *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, pw: pw, ready: make(chan struct{})}
	r := req.Clone(req.Context())
	if r.RequestURI == "" {
		r.RequestURI = req.URL.RequestURI()
	}
	go func() {
		defer func() {
			if p := recover(); p != nil {
				pw.CloseWithError(fmt.Errorf("origin handler panic: %v", p))
				w.writeHeader(http.StatusInternalServerError)
				return
			}
			w.writeHeader(http.StatusOK)
			pw.Close()
		}()
		t.h.ServeHTTP(w, r)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		pr.CloseWithError(req.Context().Err())
		return nil, req.Context().Err()
	}
	resp := &http.Response{
		Status:     strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode: w.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.sent, Body: pr, ContentLength: -1, Request: req,
	}
	if cl, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = cl
	}
	if req.Method == http.MethodHead || w.status == http.StatusNotModified || w.status == http.StatusNoContent {
		resp.Body = http.NoBody
		pr.Close()
	}
	return resp, nil
}

type pipeWriter struct {
	header http.Header
	sent   http.Header
	pw     *io.PipeWriter
	status int
	once   sync.Once
	ready  chan struct{}
}

func (w *pipeWriter) Header() http.Header { return w.header }

func (w *pipeWriter) WriteHeader(code int) { w.writeHeader(code) }

func (w *pipeWriter) writeHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeWriter) Write(p []byte) (int, error) {
	w.writeHeader(http.StatusOK)
	n, err := w.pw.Write(p)
	if errors.Is(err, io.ErrClosedPipe) {
		return n, http.ErrAbortHandler
	}
	return n, err
}
