-- Finding 16 of the nemesis: which decision reserved a seat. A decision
-- whose call then fails (not sent, refused) gives back the seat it
-- reserved itself, by this mark, never a seat a later decision for the
-- same chat and agent took (another daemon's, after this one's claim was
-- lost). NULL once the seat is confirmed, or when nobody reserved it.
ALTER TABLE open_chats ADD COLUMN reservation BIGINT;
