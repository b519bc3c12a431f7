COPY colpg.centroids (index_id, code, centroid) FROM STDIN (FORMAT BINARY)
