# Varnish peer for bench/edge: a plain caching proxy in front of the
# benchmark origin. The origin sends Cache-Control: max-age=3600, so the
# built-in VCL caches every object; nothing else is customised.
# {{.Origin}} is replaced by the runner with the origin's host:port.
vcl 4.1;

backend origin {
    .host = "{{.OriginHost}}";
    .port = "{{.OriginPort}}";
}
