-- A link is looked up from one record: its id, object and connection, and the other side's connection and object.
-- Both indexes used to start with the connection and object, so each could serve either side's half of
-- `find_link`'s query. A prepared statement's generic plan then picked them crosswise: each half ran on the
-- index of the other side, bounded by the connections and objects only, and read every link between the two
-- objects to find one (a few thousand index entries per look-up after a few thousand invoices). With the record
-- id first, each index serves only its own side, and a look-up reads one entry.
ALTER TABLE links DROP CONSTRAINT links_a_connection_a_object_a_id_b_connection_b_object_key;
CREATE UNIQUE INDEX links_a_side ON links (a_id, a_object, a_connection, b_connection, b_object);
DROP INDEX links_b_side;
CREATE INDEX links_b_side ON links (b_id, b_object, b_connection, a_connection, a_object);
