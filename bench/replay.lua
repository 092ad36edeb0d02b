-- The fixed request body to /media: the nginx proxy forwards it; the relay replays it.
wrk.method = "POST"
wrk.path = "/media"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"messageId":"bench-fixed-0001","mediaType":"IMAGE","mediaUrl":"https://cdn.example.com/img/1.png","caption":"hello","from":"254110090747","to":"254712345678"}'
