"""lingen."""
