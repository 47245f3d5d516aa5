-- What herd did to a message on the way: NUL characters removed from an inbound text (PostgreSQL
-- cannot store them), a message cut to fit the prompt budget. NULL when nothing was done.
ALTER TABLE messages ADD COLUMN note TEXT;
