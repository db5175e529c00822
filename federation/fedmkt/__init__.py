"""FedMKT between members: cards that choose the exchange, then the exchange itself."""
