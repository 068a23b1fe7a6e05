"""`mipnode lab`: RFC 4487 firewall scenarios in network namespaces with real daemons."""
