COPY (SELECT centroid FROM colpg.centroids WHERE index_id = %(index_id)s ORDER BY code) TO STDOUT (FORMAT BINARY)
