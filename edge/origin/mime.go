package origin

import (
	"mime"
	"path"
)

func mimeType(name string) string { return mime.TypeByExtension(path.Ext(name)) }
