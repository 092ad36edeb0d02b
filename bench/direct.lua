-- The fixed request body, straight to the fake gateway's path (the "direct" target).
wrk.method = "POST"
wrk.path = "/api/v1/whatsapp/media"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["apiKey"] = "bench-key-not-a-secret"
wrk.body = '{"messageId":"bench-fixed-0001","mediaType":"IMAGE","mediaUrl":"https://cdn.example.com/img/1.png","caption":"hello","from":"254110090747","to":"254712345678"}'
