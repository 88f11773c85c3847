"""Operations: health and metrics endpoints, the expiry sweep."""
