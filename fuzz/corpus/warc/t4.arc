filedesc://t4.arc 0.0.0.0 20240101000000 text/plain 66
1 0 Test
URL IP-address Archive-date Content-type Archive-length


http://www.example.net/arc.html 93.184.216.34 20240101000000 text/html 293
HTTP/1.1 200 OK
Content-Type: text/html
Server: test
Content-Length: 214

<!DOCTYPE html>
<html><head><title>From an ARC file</title></head>
<body>
<h1>Heading</h1>
<p>Picture 0.<img src="arc1.jpg" alt="Picture 0"></p>
<p>Picture 1.<img src="arc2.jpg" alt="Picture 1"></p>
</body></html>

http://www.example.net/arc1.jpg 93.184.216.34 20240101000000 image/gif 88
HTTP/1.1 200 OK
Content-Type: image/gif
Server: test
Content-Length: 10

GIF89a....
dns:www.example.net 1.1.1.1 20240101000000 text/dns 55
20240101000000
www.example.net. 300 IN A 93.184.216.34

